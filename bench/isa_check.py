#!/usr/bin/env python3
"""Checks that the peers' tier switches (bench_data.ISA_ENV, set by `--max-isa`) take effect:
a 1024x1024 f32 product's GFLOP/s in PyTorch (MKL/oneDNN) and in JAX (XLA), and what each
reports, for every tier, each in a fresh process (the switches are read at load).

    venv/bin/python bench/isa_check.py --threads 2

A tier that does not lower the GFLOP/s of one above it on an AVX-512 machine is not held.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {here!r})
import bench_data
tier = bench_data.hold_isa_from_argv()
system, threads = sys.argv[1], int(sys.argv[2])
n = 1024
def best(f):
    f()
    times = []
    for _ in range(15):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9
if system == "torch":
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    g = best(lambda: a @ b)
    extra = {{"aten_capability": torch.backends.cpu.get_cpu_capability()}}
else:
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, set(cores[:threads]))
    import jax, jax.numpy as jnp
    jax.config.update("jax_platforms", "cpu")
    a = jnp.ones((n, n), jnp.float32); b = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    g = best(lambda: f(a, b).block_until_ready())
    extra = {{"xla_flags": os.environ.get("XLA_FLAGS", "")}}
print(json.dumps({{"system": system, "tier": tier or "widest", "gflops": round(g, 1), **extra}}))
"""


def main():
    threads = "2"
    if "--threads" in sys.argv:
        threads = sys.argv[sys.argv.index("--threads") + 1]
    code = CHILD.format(here=HERE)
    for system in ("torch", "jax"):
        for tier in ("widest", "avx512", "avx2", "scalar"):
            argv = [sys.executable, "-c", code, system, threads]
            if tier != "widest":
                argv += ["--max-isa", tier]
            out = subprocess.run(argv, capture_output=True, text=True)
            line = out.stdout.strip().splitlines()[-1:] or [json.dumps({"error": out.stderr[-300:]})]
            print(line[0], flush=True)


if __name__ == "__main__":
    main()
