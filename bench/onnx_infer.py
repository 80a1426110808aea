#!/usr/bin/env python3
"""ONNX Runtime counterpart of `nabla bench --workload infer`: batch-1 latency (median and p99
over --calls single-row runs, each timed) and batch-256 rows/s (for at least a second), of an
ONNX model exported by `nabla export --format onnx`, on inputs drawn N(0, 1), one JSON line.

    venv/bin/python bench/onnx_infer.py --model runs/f/model.onnx --threads 2 [--calls 10000]
        [--max-isa scalar|avx2|avx512]

The same model file for both: e.g. `nabla train --dataset fashion-mnist --epochs 1 --out
runs/f`, `nabla export --checkpoint runs/f/model.safetensors --format onnx --out /tmp/f.onnx`,
then `nabla bench --workload infer --model runs/f/model.safetensors` beside this script.
`--threads N` sets ONNX Runtime's intra-op threads (inter-op 1, sequential execution).
ONNX Runtime has no instruction-set switch of its own (MLAS picks its kernels from cpuid), so
--max-isa is refused rather than silently ignored.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--max-isa", default=None)
    args = ap.parse_args()
    if args.max_isa is not None:
        sys.exit("--max-isa: ONNX Runtime has no switch that holds MLAS to an instruction-set tier")
    if args.model is None:
        sys.exit("--model FILE.onnx is required (nabla export --format onnx --checkpoint ... --out ...)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    sample = [d for d in inp.shape[1:]]
    if not all(isinstance(d, int) for d in sample):
        sys.exit(f"{args.model}: input {inp.name} has a symbolic sample shape {inp.shape}")
    rng = np.random.default_rng(0)
    one = rng.standard_normal([1] + sample).astype(np.float32)
    many = rng.standard_normal([256] + sample).astype(np.float32)
    for _ in range(100):
        sess.run(None, {inp.name: one})
    times = []
    for _ in range(args.calls):
        t = time.perf_counter()
        sess.run(None, {inp.name: one})
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    at = lambda q: times[round((len(times) - 1) * q)]  # noqa: E731
    sess.run(None, {inp.name: many})
    start, batches = time.perf_counter(), 0
    while batches < 10 or time.perf_counter() - start < 1.0:
        sess.run(None, {inp.name: many})
        batches += 1
    secs = time.perf_counter() - start
    print(json.dumps({"name": "infer", "system": "onnxruntime " + ort.__version__,
                      "model": args.model, "threads": args.threads, "calls": args.calls,
                      "batch1_median_us": at(0.5), "batch1_p99_us": at(0.99),
                      "batch256_rows_per_s": batches * 256 / secs}), flush=True)


if __name__ == "__main__":
    main()
