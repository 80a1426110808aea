#!/usr/bin/env python3
"""PyTorch-layout interop checks in numpy, following nn.Linear's convention to the letter
(`x @ W.T + b`, W stored [out, in]), with the Python `safetensors` package.

    python3 check_torch.py export STATE_DICT.safetensors REFERENCE.safetensors
        STATE_DICT was written by nabla's export_torch; REFERENCE holds `input` and nabla's
        `logits`. Rebuilds the forward pass from the state dict alone and compares.
    python3 check_torch.py make STATE_DICT.safetensors REFERENCE.safetensors
        Writes a PyTorch-layout state dict of a 5-7-6-3 ReLU MLP (module names of an
        nn.Sequential under a `layers.` prefix, random float32 weights) and REFERENCE with
        `input` and numpy's `logits`, for nabla's import_torch to reproduce.
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def forward(state, x, prefix=""):
    idx = sorted({int(k[len(prefix):].split(".")[0]) for k in state})
    h = x.astype(np.float64)
    for i, m in enumerate(idx):
        w = state[f"{prefix}{m}.weight"].astype(np.float64)  # [out, in]
        b = state[f"{prefix}{m}.bias"].astype(np.float64)
        h = h @ w.T + b
        if i + 1 < len(idx):
            h = np.maximum(h, 0.0)
    return h


def main():
    mode, state_path, ref_path = sys.argv[1:4]
    if mode == "export":
        state = load_file(state_path)
        with safe_open(state_path, framework="np") as f:
            meta = f.metadata()
        assert meta["format"] == "pytorch-state-dict", meta
        assert meta["torch_module"].startswith("nn.Sequential(nn.Linear("), meta
        ref = load_file(ref_path)
        err = float(np.max(np.abs(forward(state, ref["input"]) - ref["logits"])))
        print(f"architecture {meta['architecture']}, max |numpy − nabla| = {err:.3e}")
        if not err <= 1e-5:
            sys.exit(f"logits differ by {err}")
    else:
        rng = np.random.default_rng(7)
        sizes = [5, 7, 6, 3]
        state = {}
        for k, (i, o) in enumerate(zip(sizes, sizes[1:])):
            state[f"layers.{2 * k}.weight"] = rng.normal(0, 0.5, (o, i)).astype(np.float32)
            state[f"layers.{2 * k}.bias"] = rng.normal(0, 0.1, (o,)).astype(np.float32)
        save_file(state, state_path)
        x = rng.normal(0, 1, (9, 5)).astype(np.float32)
        logits = forward(state, x, "layers.").astype(np.float32)
        save_file({"input": x, "logits": logits}, ref_path)
        print("wrote", state_path, ref_path)


if __name__ == "__main__":
    main()
