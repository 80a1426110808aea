#!/usr/bin/env python3
"""PyTorch counterpart of `nabla bench`: the same workloads, one JSON line each.

    python3 bench/pytorch_reference.py --threads 2 [--workload tiny|fashion|wide|cnn|all] [--steps N]
    python3 bench/pytorch_reference.py --workload gpt --text FILE [--seed S] [--threads 2]

tiny:    2-64-64-3 ReLU, 3-class spiral of 1000 points per class, batch 32, Adam 1e-3,
         10,000 steps -> steps/s
fashion: 784-512-256-10 ReLU, Fashion-MNIST train (pixels/255), batch 128, Adam 1e-3,
         one shuffled epoch -> seconds; then test accuracy (not timed)
wide:    784-2048-2048-10 ReLU, Fashion-MNIST train, batch 512, Adam 1e-3, 40 steps
         -> GFLOP/s = 6 * weights * 512 * steps / s
cnn:     conv(1->32, 3x3, pad 1)-ReLU-maxpool 2-conv(32->64, 3x3, pad 1)-ReLU-maxpool 2-
         flatten-3136-128-10 ReLU, Fashion-MNIST train as [N, 1, 28, 28], batch 128, Adam 1e-3,
         one shuffled epoch -> seconds (and s per step); then test accuracy (not timed).
         Slow, so not part of `all`. `--steps N` times only the first N steps and
         extrapolates: epoch_seconds = seconds_per_step * 469, "extrapolated": true.
gpt:     nanoGPT's CPU "baby GPT" on a text (bench/gpt_reference.py; its doc has the
         details), 2,000 steps -> validation loss (nats/char), seconds, peak RSS.
Only the training loop is timed (data already in memory); cross-entropy from logits.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_data  # noqa: E402

# `--max-isa T` holds torch's kernels to a tier: set before torch loads.
MAX_ISA = bench_data.hold_isa_from_argv()
import torch  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"


def fashion_split(data_dir, prefix):
    x, y = bench_data.fashion_split(data_dir, prefix)
    return torch.from_numpy(x), torch.from_numpy(y)


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def spiral(points, classes, noise, rng):
    x, y = bench_data.spiral(points, classes, noise, rng)
    return torch.from_numpy(x), torch.from_numpy(y)


def tiny(steps):
    torch.manual_seed(0)
    x, y = spiral(1000, 3, 0.2, np.random.default_rng(0))
    model = mlp([2, 64, 64, 3])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(y)
    order = torch.randperm(n)
    pos = 0
    start = time.perf_counter()
    for _ in range(steps):
        if pos + 32 > n:
            order, pos = torch.randperm(n), 0
        idx = order[pos:pos + 32]
        pos += 32
        loss = step(model, opt, x[idx], y[idx])
    secs = time.perf_counter() - start
    return {"name": "tiny", "system": "pytorch", "threads": torch.get_num_threads(), "steps": steps,
            "seconds": secs, "steps_per_s": steps / secs, "final_loss": float(loss)}


def fashion(data_dir):
    torch.manual_seed(0)
    x, y = fashion_split(data_dir, "train")
    xt, yt = fashion_split(data_dir, "t10k")
    model = mlp([784, 512, 256, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(y))
    start = time.perf_counter()
    steps = 0
    for i in range(0, len(y), 128):
        idx = order[i:i + 128]
        step(model, opt, x[idx], y[idx])
        steps += 1
    secs = time.perf_counter() - start
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    return {"name": "fashion", "system": "pytorch", "threads": torch.get_num_threads(), "steps": steps,
            "epoch_seconds": secs, "test_accuracy": acc}


def wide(data_dir, steps):
    torch.manual_seed(0)
    x, y = fashion_split(data_dir, "train")
    sizes = [784, 2048, 2048, 10]
    model = mlp(sizes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    order = torch.randperm(len(y))
    batches = [order[i:i + 512] for i in range(0, len(y) - 511, 512)]
    step(model, opt, x[batches[0]], y[batches[0]])  # untimed warm-up
    start = time.perf_counter()
    for s in range(steps):
        idx = batches[1 + s % (len(batches) - 1)]
        step(model, opt, x[idx], y[idx])
    secs = time.perf_counter() - start
    return {"name": "wide", "system": "pytorch", "threads": torch.get_num_threads(), "steps": steps,
            "seconds": secs, "gflops": 6 * weights * 512 * steps / secs / 1e9}


def cnn_model():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn(data_dir, max_steps=None):
    torch.manual_seed(0)
    x, y = fashion_split(data_dir, "train")
    xt, yt = fashion_split(data_dir, "t10k")
    x, xt = x.reshape(-1, 1, 28, 28), xt.reshape(-1, 1, 28, 28)
    model = cnn_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(y))
    epoch_steps = (len(y) + 127) // 128
    limit = epoch_steps if max_steps is None else min(max_steps, epoch_steps)
    start = time.perf_counter()
    steps = 0
    for i in range(0, len(y), 128):
        if steps == limit:
            break
        idx = order[i:i + 128]
        step(model, opt, x[idx], y[idx])
        steps += 1
    secs = time.perf_counter() - start
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 1000]).argmax(1) for i in range(0, len(yt), 1000)])
        acc = (pred == yt).float().mean().item()
    partial = steps < epoch_steps
    return {"name": "cnn", "system": "pytorch", "threads": torch.get_num_threads(), "steps": steps,
            "seconds": secs, "seconds_per_step": secs / steps,
            "epoch_seconds": secs / steps * epoch_steps if partial else secs,
            "extrapolated": partial, "test_accuracy": acc}


def main():
    if "--workload" in sys.argv and sys.argv[sys.argv.index("--workload") + 1:][:1] == ["gpt"]:
        # the character-level GPT: bench/gpt_reference.py, with the same flags
        import gpt_reference  # noqa: E402
        i = sys.argv.index("--workload")
        sys.argv[i:i + 2] = []
        return gpt_reference.main()
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workload", default="all", choices=["tiny", "fashion", "wide", "cnn", "all"],
                    help="`all` is tiny, fashion and wide; cnn only when asked")
    ap.add_argument("--data-dir", default=FASHION)
    ap.add_argument("--steps", type=int, default=None,
                    help="cnn: time only the first N steps and extrapolate the epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tier = {"isa_tier": MAX_ISA or "widest", "aten_capability": torch.backends.cpu.get_cpu_capability()}
    if args.workload in ("tiny", "all"):
        print(json.dumps({**tiny(10_000), **tier}), flush=True)
    if args.workload in ("fashion", "all"):
        print(json.dumps({**fashion(args.data_dir), **tier}), flush=True)
    if args.workload in ("wide", "all"):
        print(json.dumps({**wide(args.data_dir, 40), **tier}), flush=True)
    if args.workload == "cnn":
        print(json.dumps({**cnn(args.data_dir, args.steps), **tier}), flush=True)


if __name__ == "__main__":
    main()
