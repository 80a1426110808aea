#!/usr/bin/env python3
"""JAX counterpart of bench/gpt_reference.py (and of `nabla train --dataset text --arch
gpt-tiny`): nanoGPT's CPU "baby GPT", the whole training step (forward, loss, backward,
clipping, AdamW) one `jax.jit` program; one JSON line with the validation loss, the wall time
and the peak RSS.

    python3 bench/gpt_jax.py --text FILE [--seed S] [--threads 2] [--steps 2000]
                             [--max-isa scalar|avx2|avx512]
    (also `python3 bench/jax_reference.py --workload gpt ...`)

The same model, data, split and settings as gpt_reference.py (its doc has them), written in
jax.numpy: weights stored [in, out]; causal attention as two einsums around a masked softmax
(a little faster here than `jax.nn.dot_product_attention`); GELU's tanh approximation; layer
norm without bias, eps 1e-5; the head tied to the token embedding. AdamW as PyTorch's (decoupled decay `p -= lr·0.1·p`, then Adam with bias
correction, β 0.9/0.99, ε 1e-8), clipping at global norm 1 as `clip_grad_norm_` (scale
`1/(norm + 1e-6)` when below 1). Training windows at random offsets from numpy's generator
seeded with `--seed` (PyTorch draws its own); the validation windows are exactly nabla's.
Timed as the others: from building the model to the last validation pass, XLA's compilation
included; `first_step_seconds` (compilation and one step) is reported beside it.
Install: `venv/bin/pip install jax` (never a CI dependency).
"""
import json
import math
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_data  # noqa: E402
from bench_data import lr_at, windows  # noqa: E402


def init(vocab, context, seed, width=128, depth=4):
    import jax.numpy as jnp
    rng = np.random.default_rng(seed)

    def normal(shape, std):
        return jnp.asarray(rng.normal(0.0, std, shape).astype(np.float32))

    out_std = 0.02 / math.sqrt(2 * depth)
    blocks = [{
        "ln1": jnp.ones(width, jnp.float32), "qkv": normal((width, 3 * width), 0.02),
        "proj": normal((width, width), out_std), "ln2": jnp.ones(width, jnp.float32),
        "fc": normal((width, 4 * width), 0.02), "out": normal((4 * width, width), out_std),
    } for _ in range(depth)]
    return {"tok": normal((vocab, width), 0.02), "pos": normal((context, width), 0.02),
            "blocks": blocks, "ln_f": jnp.ones(width, jnp.float32)}


def make_fns(heads=4):
    import jax
    import jax.numpy as jnp

    def layer_norm(x, w):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * w

    def attention(q, k, v):
        # [b, t, heads, d]; causal. Written out: 74 ms per step against 78 with
        # jax.nn.dot_product_attention(is_causal=True) (this session's CPU, 2 threads).
        t, d = q.shape[1], q.shape[3]
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)

    def logits_of(p, ids):
        b, t = ids.shape
        h = p["tok"][ids] + p["pos"][:t]
        for blk in p["blocks"]:
            c = h.shape[-1]
            q, k, v = jnp.split(layer_norm(h, blk["ln1"]) @ blk["qkv"], 3, axis=-1)
            q, k, v = (z.reshape(b, t, heads, c // heads) for z in (q, k, v))
            a = attention(q, k, v).reshape(b, t, c)
            h = h + a @ blk["proj"]
            h = h + jax.nn.gelu(layer_norm(h, blk["ln2"]) @ blk["fc"], approximate=True) @ blk["out"]
        return layer_norm(h, p["ln_f"]) @ p["tok"].T

    def ce_sum(p, ids, targets):
        logp = jax.nn.log_softmax(logits_of(p, ids), axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1).sum()

    def loss_fn(p, ids, targets):
        return ce_sum(p, ids, targets) / targets.size

    def step(p, m, v, t, lr, ids, targets):
        loss, g = jax.value_and_grad(loss_fn)(p, ids, targets)
        leaves = jax.tree_util.tree_leaves(g)
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
        scale = jnp.minimum(1.0, 1.0 / (norm + 1e-6))
        g = jax.tree_util.tree_map(lambda x: x * scale, g)
        b1, b2, eps, wd = 0.9, 0.99, 1e-8, 0.1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t

        def update(p, m, v):
            p = p - lr * wd * p
            return p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps)
        p = jax.tree_util.tree_map(update, p, m, v)
        return p, m, v, loss

    return jax.jit(step, donate_argnums=(0, 1, 2)), jax.jit(ce_sum)


def main():
    max_isa = bench_data.hold_isa_from_argv()
    args = bench_data.gpt_args(__doc__)
    if args.dropout != 0.0:
        sys.exit("gpt_jax.py: --dropout is not implemented here (bench/gpt_reference.py has it)")
    from jax_reference import configure_threads  # (imports no jax itself)
    configure_threads(args.threads)
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_platforms", "cpu")
    chars, ids, cut = bench_data.gpt_text(args.text)
    tokens = np.array(ids, dtype=np.int32)
    train, val = tokens[:cut], tokens[cut:]
    val_starts = windows(val, args.context, 256)
    offsets = np.arange(args.context)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    params = init(len(chars), args.context, args.seed)
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    step_fn, ce_sum = make_fns()

    def evaluate(p):
        total, count = 0.0, 0
        for a in range(0, len(val_starts), 128):
            idx = np.array(val_starts[a:a + 128])[:, None] + offsets[None, :]
            total += float(ce_sum(p, val[idx], val[idx + 1]))
            count += idx.size
        return total / count

    curve, first_step = [], None
    for step in range(args.steps):
        s = rng.integers(0, len(train) - args.context, args.batch)
        idx = s[:, None] + offsets[None, :]
        params, m, v, loss = step_fn(params, m, v, float(step + 1), lr_at(step, total=args.steps),
                                     train[idx], train[idx + 1])
        if first_step is None:
            loss.block_until_ready()
            first_step = time.perf_counter() - started
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            curve.append((step + 1, evaluate(params)))
    val_loss = evaluate(params)
    curve.append((args.steps, val_loss))
    seconds = time.perf_counter() - started
    print(json.dumps({
        "system": "jax", "version": jax.__version__, "workload": "gpt", "seed": args.seed,
        "max_isa": max_isa, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threads": args.threads, "steps": args.steps, "val_loss": val_loss,
        "val_bits_per_char": val_loss / math.log(2), "val_windows": len(val_starts),
        "last_train_loss": float(loss), "seconds": seconds, "first_step_seconds": first_step,
        "val_curve": curve,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(x.size for x in jax.tree_util.tree_leaves(params)),
    }))


if __name__ == "__main__":
    main()
