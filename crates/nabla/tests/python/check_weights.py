#!/usr/bin/env python3
"""Reads a nabla weights file with the Python `safetensors` package (numpy API), runs the MLP
forward pass in numpy, and compares with the logits nabla computed.

    python3 check_weights.py WEIGHTS.safetensors REFERENCE.safetensors

REFERENCE holds `input` [n, d] and `logits` [n, k] from nabla. nabla stores each Linear weight
as [in, out] (O = X·W + b), so the numpy forward is `h @ W + b`. Exits non-zero on mismatch.
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def main():
    weights_path, reference_path = sys.argv[1], sys.argv[2]
    weights = load_file(weights_path)
    with safe_open(weights_path, framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "nabla-weights", meta
    config = meta["model_config"]
    ref = load_file(reference_path)
    # names are nabla.layers.{i}.weight (the prefix keeps PyTorch from loading [in, out] weights)
    assert all(k.startswith("nabla.layers.") for k in weights), list(weights)
    layers = sorted({int(k.split(".")[2]) for k in weights}, key=int)
    h = ref["input"].astype(np.float64)
    for i, idx in enumerate(layers):
        w = weights[f"nabla.layers.{idx}.weight"].astype(np.float64)
        b = weights[f"nabla.layers.{idx}.bias"].astype(np.float64)
        h = h @ w + b
        if i + 1 < len(layers):
            h = np.maximum(h, 0.0)  # the test model uses ReLU
    err = float(np.max(np.abs(h - ref["logits"].astype(np.float64))))
    print(f"layers {layers}, config {config}, max |numpy − nabla| = {err:.3e}")
    if not err <= 1e-5:
        sys.exit(f"logits differ by {err}")


if __name__ == "__main__":
    main()
