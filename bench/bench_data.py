"""Data for the reference benchmarks (bench/pytorch_reference.py, bench/jax_reference.py),
as numpy arrays: the same Fashion-MNIST reading and the same spiral in both."""
import gzip
import math
import os

import numpy as np

# Each peer's own switches that hold its kernels to an instruction-set tier, as nabla's
# NABLA_MAX_ISA / `nabla bench --max-isa` does: XLA's code generator, PyTorch's ATen kernels,
# oneDNN and MKL (the BLAS under torch.matmul). "scalar" is nabla's portable tier; the peers
# have no scalar tier, so SSE4.2 is the nearest they offer. Checked by bench/isa_check.py
# (bench/README.md, "Instruction-set tiers"): XLA's --xla_cpu_max_isa alone does not hold its
# matrix products, which YNNPACK runs with the widest instructions; with YNNPACK's dot fusion
# off (--xla_cpu_experimental_ynn_fusion_type=) XLA's own emitter runs them and obeys the
# tier (a 1024² product: 292 GFLOP/s widest, 151 at AVX2, 55 at SSE4_2 on a Xeon whose AVX2
# and SSE peaks are 190 and 62).
ISA_ENV = {
    "scalar": {"xla": "--xla_cpu_max_isa=SSE4_2 --xla_cpu_experimental_ynn_fusion_type=",
               "ATEN_CPU_CAPABILITY": "default",
               "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"xla": "--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type=",
             "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"xla": "--xla_cpu_max_isa=AVX512", "ATEN_CPU_CAPABILITY": "avx512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}


def hold_isa_from_argv():
    """Reads `--max-isa scalar|avx2|avx512` from sys.argv (removing it) and sets every peer's
    tier switch in the environment. Must run before torch or jax is imported: they read the
    switches once, at load. Returns the tier, or None."""
    import sys
    if "--max-isa" not in sys.argv:
        return None
    i = sys.argv.index("--max-isa")
    tier = (sys.argv[i + 1:i + 2] or [""])[0]
    if tier not in ISA_ENV:
        raise SystemExit(f"--max-isa {tier!r}: expected one of {', '.join(ISA_ENV)}")
    del sys.argv[i:i + 2]
    env = ISA_ENV[tier]
    flags = os.environ.get("XLA_FLAGS", "") + " " + env["xla"]
    os.environ["XLA_FLAGS"] = flags.strip()
    for k, v in env.items():
        if k != "xla":
            os.environ[k] = v
    return tier


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndims = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def fashion_split(data_dir, prefix):
    """Pixels / 255 as float32 [n, 784], labels as int64 [n]."""
    def find(stem):
        for name in (stem + ".gz", stem):
            if os.path.exists(os.path.join(data_dir, name)):
                return os.path.join(data_dir, name)
        raise SystemExit(f"{data_dir}/{stem}[.gz] not found (apt-get install dataset-fashion-mnist)")
    x = read_idx(find(f"{prefix}-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return x, y


def spiral(points, classes, noise, rng):
    """float32 [points * classes, 2] and int64 labels."""
    xs, ys = [], []
    for c in range(classes):
        r = np.arange(points) / points
        theta = c * 2 * math.pi / classes + 4 * r + noise * rng.standard_normal(points)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(points, c))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


# The baby GPT's flags, text split, learning-rate schedule and validation windows
# (bench/gpt_reference.py, bench/gpt_jax.py).
def gpt_args(doc):
    """The flags both baby-GPT references take."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="drop probability where nanoGPT drops (gpt_reference.py only)")
    return ap.parse_args()


def gpt_text(path):
    """The text's sorted characters, its token ids (a list) and the train/validation cut (90%)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = [index[c] for c in text]
    return chars, ids, int(round(len(ids) * 0.9))


def lr_at(step, base=1e-3, warmup=100, total=2000, min_lr=1e-4):
    if step < warmup:
        return base * (step + 1) / warmup
    t, n = step - warmup, max(total - warmup, 1)
    if t >= n:
        return min_lr
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * t / n)) / 2


def windows(tokens, context, max_windows):
    """nabla's TextData::spread: non-overlapping windows spread evenly over the tokens."""
    span = max(len(tokens) - context - 1, 0)
    stride = max(context, -(-span // max(max_windows - 1, 1)))
    n = span // stride + 1 if len(tokens) >= context + 1 else 0
    return [i * stride for i in range(n)]
