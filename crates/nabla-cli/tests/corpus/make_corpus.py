#!/usr/bin/env python3
"""Writes the malformed-file corpus that tests/corpus.rs runs through the loaders and the CLI.

Run from this directory: python3 make_corpus.py. Standard library only; the output is committed.
"""
import gzip
import json
import os
import struct


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def idx(dims, payload, type_code=8, magic=b"\x00\x00"):
    return magic + bytes([type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


good_images = idx([3, 2, 2], bytes(range(12)))

# --- IDX (read by `nabla predict --input`) -----------------------------------------------
write("idx/empty.idx", b"")
write("idx/short-header.idx", b"\x00\x00")
write("idx/bad-magic.idx", b"\x01\x02" + good_images[2:])
write("idx/float-type.idx", idx([3, 4], bytes(12 * 4), type_code=0x0D))
write("idx/zero-dims.idx", b"\x00\x00\x08\x00")
write("idx/truncated-header.idx", b"\x00\x00\x08\x03\x00\x00\x00\x03\x00\x00")
write("idx/truncated-data.idx", good_images[:-5])
write("idx/trailing-bytes.idx", good_images + b"extra")
write("idx/claims-terabytes.idx", idx([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b"\x00" * 16))
write("idx/html-page.idx", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")
write("idx/git-lfs-pointer.idx", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 47040016\n")
write("idx/not-really.gz", b"\x1f\x8b\x08\x00garbage that is not deflate")
write("idx/truncated.gz", gzip.compress(good_images, mtime=0)[:-12])
write("idx/gzip-claims-billions.gz", gzip.compress(idx([1000000000, 28, 28], bytes(64)), mtime=0))

# --- CSV (read by `nabla train --csv`) -----------------------------------------------------
write("csv/text-cell.csv", b"a,b,label\n1,2,0\n3,abc,1\n")
write("csv/missing-value.csv", b"a,b,label\n1,,0\n")
write("csv/nan-value.csv", b"a,b,label\n1,NaN,0\n2,3,1\n")
write("csv/inf-value.csv", b"a,b,label\n1,inf,0\n2,3,1\n")
write("csv/ragged-row.csv", b"a,b,label\n1,2,0\n1,2\n")
write("csv/empty.csv", b"")
write("csv/header-only.csv", b"a,b,label\n")
write("csv/not-utf8.csv", b"a,b,label\n1,2,\xff\xfe\n")
write("csv/fractional-label.csv", b"a,b,label\n1,2,0.5\n3,4,1\n")
write("csv/negative-label.csv", b"a,b,label\n1,2,-1\n3,4,1\n")
write("csv/single-column.csv", b"label\n1\n0\n")

# --- safetensors (read by `nabla info` / `nabla eval --checkpoint`) ------------------------
def safetensors(header, payload):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + payload


model_meta = {
    "format": "nabla-weights",
    "model_config": json.dumps({"sizes": [2, 3], "activation": "relu", "dropout": 0.0,
                                "init": "kaiming_uniform", "seed": 0}),
    "task": '"classification"',
    "normalizer": json.dumps({"mode": "none", "mean": [], "std": []}),
    "class_names": json.dumps(["0", "1", "2"]),
    "dataset": "spiral",
}


def tensor(dtype, shape, start, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


write("safetensors/empty.safetensors", b"")
write("safetensors/short.safetensors", b"\x05\x00\x00")
write("safetensors/header-claims-exabytes.safetensors", struct.pack("<Q", 1 << 60) + b"{}")
write("safetensors/bad-json.safetensors", struct.pack("<Q", 10) + b"{not json}")
write("safetensors/html-page.safetensors", b"<html><body>Forbidden</body></html>")
write("safetensors/overlapping-offsets.safetensors", safetensors({
    "__metadata__": model_meta,
    "layers.0.weight": tensor("F32", [2, 3], 0, 24),
    "layers.0.bias": tensor("F32", [3], 12, 24),
}, bytes(24)))
write("safetensors/offsets-past-end.safetensors", safetensors({
    "__metadata__": model_meta,
    "layers.0.weight": tensor("F32", [2, 3], 0, 24),
    "layers.0.bias": tensor("F32", [3], 24, 36),
}, bytes(24)))
write("safetensors/wrong-dtype.safetensors", safetensors({
    "__metadata__": model_meta,
    "layers.0.weight": tensor("F64", [2, 3], 0, 48),
    "layers.0.bias": tensor("F32", [3], 48, 60),
}, bytes(60)))
write("safetensors/wrong-shape.safetensors", safetensors({
    "__metadata__": model_meta,
    "layers.0.weight": tensor("F32", [3, 2], 0, 24),
    "layers.0.bias": tensor("F32", [3], 24, 36),
}, bytes(36)))
write("safetensors/missing-tensor.safetensors", safetensors({
    "__metadata__": model_meta,
    "layers.0.weight": tensor("F32", [2, 3], 0, 24),
}, bytes(24)))
write("safetensors/size-mismatch.safetensors", safetensors({
    "__metadata__": model_meta,
    "layers.0.weight": tensor("F32", [2, 3], 0, 20),
    "layers.0.bias": tensor("F32", [3], 20, 32),
}, bytes(32)))
write("safetensors/not-a-model.safetensors", safetensors({
    "x": tensor("F32", [1], 0, 4),
}, bytes(4)))
