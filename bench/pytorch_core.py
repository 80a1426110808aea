#!/usr/bin/env python3
"""PyTorch counterpart of `cargo bench -p nabla` (crates/nabla/benches/core.rs).

Times the same matrix products and the same 784-512-256-10 MLP forward+backward at batch 128,
on the CPU with the same thread count, and prints one line per benchmark (median of repeats).

    python3 bench/pytorch_core.py --threads 2
"""
import argparse
import statistics
import time

import torch


def bench(fn, min_time=2.0):
    for _ in range(10):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    for m, k, n, ta, tb in [
        (128, 784, 512, False, False),
        (128, 512, 256, False, False),
        (128, 256, 10, False, False),
        (784, 128, 512, True, False),
        (128, 512, 784, False, True),
    ]:
        a = torch.randn(k, m) if ta else torch.randn(m, k)
        b = torch.randn(n, k) if tb else torch.randn(k, n)
        aa = a.t() if ta else a
        bb = b.t() if tb else b
        t = bench(lambda: aa @ bb)
        name = f"{m}x{k}{'(T)' if ta else ''} * {k}x{n}{'(T)' if tb else ''}"
        print(f"matmul/{name}: {t * 1e6:.1f} us, {2 * m * k * n / t / 1e9:.1f} GFLOP/s")

    sizes = [784, 512, 256, 10]
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        w = (torch.randn(d_in, d_out) * (2.0 / d_in) ** 0.5).requires_grad_()
        b = torch.zeros(d_out, requires_grad=True)
        params.append((w, b))
    x = torch.rand(128, 784)
    labels = torch.tensor([(i * 7) % 10 for i in range(128)])

    def logits():
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i + 1 < len(params):
                h = torch.relu(h)
        return h

    def step():
        loss = torch.nn.functional.cross_entropy(logits(), labels)
        return torch.autograd.grad(loss, [p for wb in params for p in wb])

    t = bench(step)
    print(f"mlp_784_512_256_10_b128/forward_backward: {t * 1e3:.3f} ms")
    with torch.no_grad():
        t = bench(logits)
    print(f"mlp_784_512_256_10_b128/forward_no_grad: {t * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
