#!/usr/bin/env python3
"""PyTorch reference for `nabla train --dataset fashion-mnist --arch cnn`: the same model,
data preparation and settings, for accuracy and wall time side by side.

    python3 bench/fashion_cnn_pytorch.py --spec runs/X/config.json --seed 0 [--threads 2]
        [--epochs N] [--hflip]

Model: the nabla model spec in FILE (a run's config.json, whose train_config.model is the
spec, or a spec's JSON), built as the nn.Sequential nabla's exporter writes (conv2d,
batch_norm2d, relu, max_pool2d, flatten, linear, dropout). Data: pixels/255, then one global
mean and std fitted on the training rows (nabla's normaliser for images). Training as nabla's
cnn preset: AdamW (lr 1e-3, weight decay 0.01), cosine decay to lr/100 over all steps (per
step), label smoothing 0.1, batch 128, shuffled every epoch, with --hflip each training image
mirrored left to right with probability 1/2. PyTorch's default initialisation (nabla: Kaiming
uniform). Timed: the whole run with the data in memory, the test evaluation after each epoch
included (as nabla's "s" in its last epoch line). Prints one JSON line.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_data  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def model(spec):
    """The nn.Sequential of a nabla model spec (the layer kinds the cnn preset uses)."""
    nn = torch.nn
    shape = list(spec["input"])  # [C, H, W] or [F]
    layers = []
    for l in spec["layers"]:
        t = l["type"]
        if t == "conv2d":
            k, p = pair(l["kernel_size"]), pair(l.get("padding", 0))
            s = pair(l.get("stride", 1))
            layers.append(nn.Conv2d(shape[0], l["out_channels"], k, stride=s, padding=p,
                                    bias=l.get("bias", True)))
            shape = [l["out_channels"], (shape[1] + 2 * p[0] - k[0]) // s[0] + 1,
                     (shape[2] + 2 * p[1] - k[1]) // s[1] + 1]
        elif t == "batch_norm2d":
            layers.append(nn.BatchNorm2d(shape[0], eps=l.get("eps", 1e-5),
                                         momentum=l.get("momentum", 0.1)))
        elif t == "relu":
            layers.append(nn.ReLU())
        elif t == "max_pool2d":
            k = pair(l["kernel_size"])
            layers.append(nn.MaxPool2d(k))
            shape = [shape[0], shape[1] // k[0], shape[2] // k[1]]
        elif t == "flatten":
            layers.append(nn.Flatten())
            shape = [int(np.prod(shape))]
        elif t == "linear":
            layers.append(nn.Linear(shape[-1], l["out_features"], bias=l.get("bias", True)))
            shape = [l["out_features"]]
        elif t == "dropout":
            layers.append(nn.Dropout(l["p"]))
        else:
            raise SystemExit(f"layer {t} is not translated by this script")
    return nn.Sequential(*layers)


def accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x[i:i + 1000]).argmax(1) for i in range(0, len(y), 1000)])
    net.train()
    return (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data-dir", default=FASHION)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--hflip", action="store_true")
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    spec = spec.get("train_config", {}).get("model", spec)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = bench_data.fashion_split(args.data_dir, "train")
    xt, yt = bench_data.fashion_split(args.data_dir, "t10k")
    mean, std = float(x.astype(np.float64).mean()), float(x.astype(np.float64).std())
    prep = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32)).reshape(-1, 1, 28, 28)
    x, xt = prep(x), prep(xt)
    y, yt = torch.from_numpy(y), torch.from_numpy(yt)
    net = model(spec)
    lr = 1e-3
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(y) / args.batch)
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    start = time.perf_counter()
    history = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), args.batch):
            idx = order[i:i + args.batch]
            xb = x[idx]
            if args.hflip:
                flip = torch.rand(len(idx)) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), y[idx])
            loss.backward()
            opt.step()
            sched.step()
        history.append(accuracy(net, xt, yt))
        print(f"epoch {epoch + 1}: test accuracy {history[-1]:.4f}, "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    secs = time.perf_counter() - start
    print(json.dumps({"system": "pytorch", "torch": torch.__version__, "seed": args.seed,
                      "threads": args.threads, "epochs": args.epochs, "seconds": secs,
                      "test_accuracy": history[-1], "history": history}))


if __name__ == "__main__":
    main()
