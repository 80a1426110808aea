#!/usr/bin/env python3
"""JAX counterpart of `nabla bench` and bench/pytorch_reference.py: the same workloads,
one JSON line each, with `jax.jit` on the whole training step (forward, loss, backward, Adam).

    python3 bench/jax_reference.py --threads 2 [--workload tiny|fashion|wide|cnn|all] [--steps N]
        [--max-isa scalar|avx2|avx512]
    python3 bench/jax_reference.py --workload gpt --text FILE [--seed S] [--threads 2]
        (the character-level baby GPT: bench/gpt_jax.py, with its flags)

tiny:    2-64-64-3 ReLU, 3-class spiral of 1000 points per class, batch 32, Adam 1e-3,
         10,000 steps -> steps/s
fashion: 784-512-256-10 ReLU, Fashion-MNIST train (pixels/255), batch 128, Adam 1e-3,
         one shuffled epoch -> seconds; then test accuracy (not timed)
wide:    784-2048-2048-10 ReLU, Fashion-MNIST train, batch 512, Adam 1e-3, 40 steps
         -> GFLOP/s = 6 * weights * 512 * steps / s
cnn:     conv(1->32, 3x3, pad 1)-ReLU-maxpool 2-conv(32->64, 3x3, pad 1)-ReLU-maxpool 2-
         flatten-3136-128-10 ReLU, Fashion-MNIST train as [N, 1, 28, 28], batch 128, Adam 1e-3,
         one shuffled epoch -> seconds (and s per step); then test accuracy (not timed).
         NCHW: lax.conv_general_dilated (OIHW weights) and lax.reduce_window for the pools;
         nn.Conv2d's/nn.Linear's default init. Slow, so not part of `all`. `--steps N` times
         only the first N steps and extrapolates: epoch_seconds = seconds_per_step * 469,
         "extrapolated": true.
Only the training loop is timed (data in memory; batches gathered inside the loop, as the
others do); the first step of each workload (compilation) runs before the clock starts.
Adam is written out (PyTorch's defaults: betas 0.9/0.999, eps 1e-8, bias correction), so no
optax is needed. `--threads N` below the core count pins the process to N cores.
Install: `python3 -m venv venv && venv/bin/pip install jax numpy` (never a CI dependency).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_data  # noqa: E402


def configure_threads(n):
    """XLA's CPU backend has no thread-count setting: below the machine's core count, pin the
    process to `n` cores (the others get the same limit from their thread settings)."""
    cores = sorted(os.sched_getaffinity(0))
    if n < len(cores):
        os.sched_setaffinity(0, set(cores[:n]))
        if n == 1:
            flags = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            os.environ["XLA_FLAGS"] = flags.strip()


def fashion_split(data_dir, prefix):
    x, y = bench_data.fashion_split(data_dir, prefix)
    return x, y.astype(np.int32)


def spiral(points, classes, noise, rng):
    x, y = bench_data.spiral(points, classes, noise, rng)
    return x, y.astype(np.int32)


def make(sizes, seed):
    """Parameters like nn.Linear's default init, the Adam state, and the jitted step."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        bound = 1 / math.sqrt(a)
        params.append((jnp.asarray(rng.uniform(-bound, bound, (a, b)).astype(np.float32)),
                       jnp.asarray(rng.uniform(-bound, bound, (b,)).astype(np.float32))))

    def forward(params, x):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i + 1 < len(params):
                h = jax.nn.relu(h)
        return h

    return train_fns(params, forward)


def make_cnn(seed):
    """The cnn workload's model with nn.Conv2d's and nn.Linear's default init (kaiming uniform
    with a = sqrt(5): weights and biases both U(-1/sqrt(fan_in), 1/sqrt(fan_in))), the Adam
    state and the jitted step. Conv weights are OIHW, linear weights [in, out]."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    rng = np.random.default_rng(seed)

    def uniform(fan_in, shape):
        bound = 1 / math.sqrt(fan_in)
        return jnp.asarray(rng.uniform(-bound, bound, shape).astype(np.float32))

    params = [(uniform(1 * 9, (32, 1, 3, 3)), uniform(1 * 9, (32,))),
              (uniform(32 * 9, (64, 32, 3, 3)), uniform(32 * 9, (64,))),
              (uniform(3136, (3136, 128)), uniform(3136, (128,))),
              (uniform(128, (128, 10)), uniform(128, (10,)))]

    def conv_relu_pool(h, w, b):
        h = lax.conv_general_dilated(h, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + b[None, :, None, None])
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def forward(params, x):
        (w1, b1), (w2, b2), (w3, b3), (w4, b4) = params
        h = conv_relu_pool(conv_relu_pool(x, w1, b1), w2, b2)
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ w3 + b3)
        return h @ w4 + b4

    return train_fns(params, forward)


def train_fns(params, forward):
    """The Adam state for `params`, and the jitted training step and prediction of `forward`."""
    import jax
    import jax.numpy as jnp

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, jnp.zeros((), jnp.int32))

    def loss_fn(params, x, y):
        logp = jax.nn.log_softmax(forward(params, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(state, x_all, y_all, idx, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        # The batch is gathered inside the compiled step (one dispatch per step).
        x, y = x_all[idx], y_all[idx]
        params, m, v, t = state
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1 = 1 - b1 ** t.astype(jnp.float32)
        c2 = 1 - b2 ** t.astype(jnp.float32)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v)
        return (params, m, v, t), loss

    @jax.jit
    def predict(params, x):
        return jnp.argmax(forward(params, x), axis=1)

    return state, step, predict


def tiny(steps, threads):
    import jax
    x, y = spiral(1000, 3, 0.2, np.random.default_rng(0))
    x, y = jax.device_put(x), jax.device_put(y)
    state, step, _ = make([2, 64, 64, 3], 0)
    rng = np.random.default_rng(0)
    n = len(y)
    order, pos = rng.permutation(n), 0
    state, loss = step(state, x, y, order[:32])  # compile
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        if pos + 32 > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + 32]
        pos += 32
        state, loss = step(state, x, y, idx)
    loss.block_until_ready()
    secs = time.perf_counter() - start
    return {"name": "tiny", "system": "jax", "threads": threads, "steps": steps,
            "seconds": secs, "steps_per_s": steps / secs, "final_loss": float(loss)}


def fashion(data_dir, threads):
    import jax
    x, y = fashion_split(data_dir, "train")
    xt, yt = fashion_split(data_dir, "t10k")
    x, y = jax.device_put(x), jax.device_put(y)
    state, step, predict = make([784, 512, 256, 10], 0)
    order = np.random.default_rng(0).permutation(len(y))
    # Compile for the full and the last (short) batch before the clock starts.
    for size in (128, len(y) % 128):
        if size:
            _, l = step(state, x, y, order[:size])
            l.block_until_ready()
    start = time.perf_counter()
    steps = 0
    for i in range(0, len(y), 128):
        idx = order[i:i + 128]
        state, loss = step(state, x, y, idx)
        steps += 1
    loss.block_until_ready()
    secs = time.perf_counter() - start
    acc = float((np.asarray(predict(state[0], xt)) == yt).mean())
    return {"name": "fashion", "system": "jax", "threads": threads, "steps": steps,
            "epoch_seconds": secs, "test_accuracy": acc}


def wide(data_dir, steps, threads):
    import jax
    x, y = fashion_split(data_dir, "train")
    x, y = jax.device_put(x), jax.device_put(y)
    sizes = [784, 2048, 2048, 10]
    state, step, _ = make(sizes, 0)
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    order = np.random.default_rng(0).permutation(len(y))
    batches = [order[i:i + 512] for i in range(0, len(y) - 511, 512)]
    state, loss = step(state, x, y, batches[0])  # compile + warm-up
    loss.block_until_ready()
    start = time.perf_counter()
    for s in range(steps):
        idx = batches[1 + s % (len(batches) - 1)]
        state, loss = step(state, x, y, idx)
    loss.block_until_ready()
    secs = time.perf_counter() - start
    return {"name": "wide", "system": "jax", "threads": threads, "steps": steps,
            "seconds": secs, "gflops": 6 * weights * 512 * steps / secs / 1e9}


def cnn(data_dir, threads, max_steps=None):
    import jax
    x, y = fashion_split(data_dir, "train")
    xt, yt = fashion_split(data_dir, "t10k")
    x, xt = x.reshape(-1, 1, 28, 28), xt.reshape(-1, 1, 28, 28)
    x, y = jax.device_put(x), jax.device_put(y)
    state, step, predict = make_cnn(0)
    order = np.random.default_rng(0).permutation(len(y))
    epoch_steps = (len(y) + 127) // 128
    limit = epoch_steps if max_steps is None else min(max_steps, epoch_steps)
    # Compile for the full and (when the whole epoch runs) the last, short batch first.
    for size in (128, len(y) % 128 if limit == epoch_steps else 0):
        if size:
            _, l = step(state, x, y, order[:size])
            l.block_until_ready()
    start = time.perf_counter()
    steps = 0
    for i in range(0, len(y), 128):
        if steps == limit:
            break
        idx = order[i:i + 128]
        state, loss = step(state, x, y, idx)
        steps += 1
    loss.block_until_ready()
    secs = time.perf_counter() - start
    pred = np.concatenate([np.asarray(predict(state[0], xt[i:i + 1000]))
                           for i in range(0, len(yt), 1000)])
    acc = float((pred == yt).mean())
    partial = steps < epoch_steps
    return {"name": "cnn", "system": "jax", "threads": threads, "steps": steps,
            "seconds": secs, "seconds_per_step": secs / steps,
            "epoch_seconds": secs / steps * epoch_steps if partial else secs,
            "extrapolated": partial, "test_accuracy": acc}


def main():
    if "--workload" in sys.argv and sys.argv[sys.argv.index("--workload") + 1:][:1] == ["gpt"]:
        # the character-level GPT: bench/gpt_jax.py, with the same flags
        import gpt_jax  # noqa: E402
        i = sys.argv.index("--workload")
        sys.argv[i:i + 2] = []
        return gpt_jax.main()
    # `--max-isa T` holds XLA's code generation to a tier (XLA_FLAGS, read when jax loads).
    max_isa = bench_data.hold_isa_from_argv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workload", default="all", choices=["tiny", "fashion", "wide", "cnn", "all"],
                    help="`all` is tiny, fashion and wide; cnn only when asked")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--steps", type=int, default=None,
                    help="cnn: time only the first N steps and extrapolate the epoch")
    args = ap.parse_args()
    configure_threads(args.threads)
    import jax
    jax.config.update("jax_platforms", "cpu")
    tier = {"isa_tier": max_isa or "widest", "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if args.workload in ("tiny", "all"):
        print(json.dumps({**tiny(10_000, args.threads), **tier}), flush=True)
    if args.workload in ("fashion", "all"):
        print(json.dumps({**fashion(args.data_dir, args.threads), **tier}), flush=True)
    if args.workload in ("wide", "all"):
        print(json.dumps({**wide(args.data_dir, 40, args.threads), **tier}), flush=True)
    if args.workload == "cnn":
        print(json.dumps({**cnn(args.data_dir, args.threads, args.steps), **tier}), flush=True)


if __name__ == "__main__":
    main()
