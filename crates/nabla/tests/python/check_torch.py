#!/usr/bin/env python3
"""PyTorch-layout interop checks in numpy, following nn.Linear's convention to the letter
(`x @ W.T + b`, W stored [out, in]), with the Python `safetensors` package.

    python3 check_torch.py export STATE_DICT.safetensors REFERENCE.safetensors
        STATE_DICT was written by nabla's export_torch; REFERENCE holds `input` and nabla's
        `logits`. Rebuilds the forward pass from the state dict alone and compares.
    python3 check_torch.py export-net STATE_DICT.safetensors REFERENCE.safetensors
        The same for any exported network (convolutions, pooling, batch norm, flatten,
        residual blocks, embeddings, layer norm, attention, transformer blocks, GPTs): the layers are read from the metadata's `model_spec` and computed
        with PyTorch's conventions in numpy (NCHW, weights [out, in/groups, kh, kw], running
        statistics in batch norm); REFERENCE's `input` is [N, ...sample], and `probabilities`
        are compared too. The metadata's `torch_source` must compile; where PyTorch is
        installed it is run too (loaded with strict=True) and must give nabla's logits.
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


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(x, w, b, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def pool2d(x, k, s, p, kind):
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    windows = [x[:, :, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1]]
               for i in range(k[0]) for j in range(k[1])]
    stack = np.stack(windows)
    return stack.max(axis=0) if kind == "max" else stack.mean(axis=0)


def act(kind, h, layer):
    if kind == "relu":
        return np.maximum(h, 0.0)
    if kind == "leaky_relu":
        return np.where(h > 0, h, layer.get("negative_slope", 0.01) * h)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-h))
    if kind == "tanh":
        return np.tanh(h)
    if kind == "gelu":
        return 0.5 * h * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (h + 0.044715 * h ** 3)))
    if kind == "softplus":
        return np.log1p(np.exp(h))
    if kind == "identity":
        return h
    raise SystemExit(f"unknown layer {kind}")


def softmax(s, axis):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def linear(state, name, h):
    h = h @ state[f"{name}.weight"].astype(np.float64).T
    if f"{name}.bias" in state:
        h = h + state[f"{name}.bias"].astype(np.float64)
    return h


def layer_norm(state, name, h, eps):
    mean = h.mean(axis=-1, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=-1, keepdims=True)
    h = (h - mean) / np.sqrt(var + eps) * state[f"{name}.weight"].astype(np.float64)
    return h + state[f"{name}.bias"].astype(np.float64) if f"{name}.bias" in state else h


def attention(state, name, h, heads, causal):
    """SelfAttention as PyTorch computes it: qkv [out, in] weights, heads, 1/sqrt(d), mask."""
    b, t, c = h.shape
    d = c // heads
    q, k, v = linear(state, f"{name}.qkv", h).reshape(b, t, 3, heads, d).transpose(2, 0, 3, 1, 4)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, -np.inf)
    y = (softmax(s, -1) @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
    return linear(state, f"{name}.proj", y)


def block(state, name, h, heads, causal):
    h = h + attention(state, f"{name}.attn", layer_norm(state, f"{name}.ln1", h, 1e-5), heads, causal)
    m = act("gelu", linear(state, f"{name}.mlp.fc", layer_norm(state, f"{name}.ln2", h, 1e-5)), {})
    return h + linear(state, f"{name}.mlp.proj", m)


def gpt(state, name, ids, layer):
    table = state[f"{name}.tok_emb.weight"].astype(np.float64)
    h = table[ids] + state[f"{name}.pos_emb.weight"].astype(np.float64)[: ids.shape[1]]
    for i in range(layer["depth"]):
        h = block(state, f"{name}.blocks.{i}", h, layer["heads"], True)
    h = layer_norm(state, f"{name}.ln_f", h, 1e-5)
    return h @ table.T if layer.get("tied") else linear(state, f"{name}.head", h)


def forward_spec(state, layers, h, at=""):
    """nn.Sequential semantics: dropout modules are absent, so PyTorch's indices skip them."""
    k = 0
    for layer in layers:
        kind = layer["type"]
        if kind == "dropout":
            continue
        name = f"{at}{k}"
        k += 1
        get = lambda leaf: state[f"{name}.{leaf}"].astype(np.float64)
        if kind == "linear":
            h = h @ get("weight").T
            if f"{name}.bias" in state:
                h = h + get("bias")
        elif kind == "conv2d":
            b = get("bias") if f"{name}.bias" in state else None
            h = conv2d(h, get("weight"), b, pair(layer.get("stride", 1)), pair(layer.get("padding", 0)),
                       pair(layer.get("dilation", 1)), layer.get("groups", 1))
        elif kind in ("max_pool2d", "avg_pool2d"):
            kk = pair(layer["kernel_size"])
            st = pair(layer.get("stride") or layer["kernel_size"])
            h = pool2d(h, kk, st, pair(layer.get("padding", 0)), kind[:3])
        elif kind in ("batch_norm1d", "batch_norm2d"):
            shape = (1, -1) + (1,) * (h.ndim - 2)
            mean, var = get("running_mean").reshape(shape), get("running_var").reshape(shape)
            h = (h - mean) / np.sqrt(var + layer.get("eps", 1e-5))
            h = h * get("weight").reshape(shape) + get("bias").reshape(shape)
        elif kind == "embedding":
            h = get("weight")[h.astype(np.int64)]
        elif kind == "layer_norm":
            h = layer_norm(state, name, h, layer.get("eps", 1e-5))
        elif kind == "multi_head_attention":
            h = attention(state, name, h, layer["heads"], layer.get("causal", True))
        elif kind == "transformer_block":
            h = block(state, name, h, layer["heads"], layer.get("causal", True))
        elif kind == "gpt":
            h = gpt(state, name, h.astype(np.int64), layer)
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif kind == "sequential":
            h = forward_spec(state, layer["layers"], h, f"{name}.")
        elif kind == "residual":
            h = h + forward_spec(state, layer["layers"], h, f"{name}.inner.")
        else:
            h = act(kind, h, layer)
    return h


def main():
    mode, state_path, ref_path = sys.argv[1:4]
    if mode == "export-net":
        import json
        state = load_file(state_path)
        with safe_open(state_path, framework="np") as f:
            meta = f.metadata()
        assert meta["format"] == "pytorch-state-dict", meta
        spec = json.loads(meta["model_spec"])
        ref = load_file(ref_path)
        logits = forward_spec(state, spec["layers"], ref["input"].astype(np.float64))
        probs = softmax(logits, -1)
        err = float(np.max(np.abs(logits - ref["logits"])))
        perr = float(np.max(np.abs(probs - ref["probabilities"])))
        print(f"{len(spec['layers'])} layers, {ref['input'].shape[0]} rows: max |numpy − nabla| "
              f"logits {err:.3e}, probabilities {perr:.3e}")
        if not (err <= 1e-4 * max(1.0, float(np.abs(ref["logits"]).max())) and perr <= 1e-5):
            sys.exit(f"differ: logits {err}, probabilities {perr}")
        # The module source must at least be valid Python; where PyTorch is installed (not a
        # CI dependency), it must load the state dict strictly and give nabla's logits.
        source = compile(meta["torch_source"], "torch_source", "exec")
        try:
            import torch
        except ImportError:
            print("torch_source compiles (PyTorch not installed: not run)")
            return
        from safetensors.torch import load_file as load_torch
        ns = {}
        exec(source, ns)
        model = ns["model"].eval()
        model.load_state_dict(load_torch(state_path), strict=True)
        with torch.no_grad():
            out = model(torch.from_numpy(ref["input"])).double().numpy()
        terr = float(np.max(np.abs(out - ref["logits"])))
        print(f"PyTorch {torch.__version__} runs torch_source: max |torch − nabla| logits {terr:.3e}")
        if not terr <= 1e-4 * max(1.0, float(np.abs(ref["logits"]).max())):
            sys.exit(f"PyTorch differs: logits {terr}")
    elif mode == "export":
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
