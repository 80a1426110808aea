"""Data for the reference benchmarks (bench/pytorch_reference.py, bench/jax_reference.py),
as numpy arrays: the same Fashion-MNIST reading and the same spiral in both."""
import gzip
import math
import os

import numpy as np


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
