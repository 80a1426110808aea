#!/usr/bin/env python3
"""Runs a nabla-exported ONNX model with ONNX Runtime and compares it with nabla's outputs.

    python3 check_onnx.py NAME MODEL.onnx EXPECTED.safetensors TOLERANCE

EXPECTED holds `input` (the raw features given to nabla; for a graph whose input is int64,
token ids, fed to it as int64) and nabla's outputs under the graph's
output names (`logits` and `probabilities`, or `predictions`). Checks the file with
`onnx.checker.check_model(full_check=True)` (which also infers and checks every shape), that
the graph has exactly one input `input` and the expected outputs, then runs every row through
ONNX Runtime (CPU) and requires |onnx − nabla| <= TOLERANCE · max(1, |nabla|) for every
element. Prints one line of measured differences; exits non-zero on any mismatch.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def main():
    name, model_path, expected_path, tol = sys.argv[1:5]
    tol = float(tol)
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    expected = load_file(expected_path)
    x = expected.pop("input")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model_path, options, providers=["CPUExecutionProvider"]
    )
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != ["input"] or sorted(outputs) != sorted(expected):
        sys.exit(f"{name}: graph inputs {inputs}, outputs {outputs}; expected {sorted(expected)}")
    # Token models take int64 ids; nabla's input holds them as integral floats.
    feed = x.astype(np.int64) if session.get_inputs()[0].type == "tensor(int64)" else x
    got = dict(zip(outputs, session.run(None, {"input": feed})))
    parts, failed = [], []
    for out in outputs:
        want = expected[out].astype(np.float64)
        have = got[out].astype(np.float64)
        if have.shape != want.shape:
            sys.exit(f"{name}: {out} has shape {have.shape}, nabla {want.shape}")
        diff = np.abs(have - want)
        bound = tol * np.maximum(1.0, np.abs(want))
        worst = np.unravel_index(np.argmax(diff / bound), diff.shape)
        parts.append(
            f"max |Δ{out}| = {diff.max():.2e} (row {worst[0]}: {have[worst]:.7g} vs {want[worst]:.7g})"
        )
        if (diff > bound).any():
            bad = int((diff > bound).any(axis=-1).sum())
            failed.append(f"{out}: {bad} rows beyond {tol:g}·max(1, |nabla|)")
    print(
        f"onnx {name}: {x.shape[0]} rows, onnx {onnx.__version__} checker ok, onnxruntime "
        f"{ort.__version__}, opset {model.opset_import[0].version}: " + "; ".join(parts)
    )
    if failed:
        sys.exit(f"{name}: " + "; ".join(failed))


if __name__ == "__main__":
    main()
