#!/usr/bin/env python3
"""PyTorch reference for `nabla train --dataset fashion-mnist --arch cnn`: the same model,
data preparation and settings, for accuracy and wall time side by side.

    python3 bench/fashion_cnn_pytorch.py --seed 0 [--threads 2] [--epochs 10] [--val-fraction 0]

Model (nabla's cnn preset): [conv 3x3 pad 1 (no bias) - BatchNorm2d - ReLU] x2 with 32
channels, max-pool 2; the same with 64 channels, max-pool 2; flatten - Linear(3136, 256) -
ReLU - Dropout(0.3) - Linear(256, 10). Data: pixels/255, then one global mean and std fitted
on the training rows (nabla's normaliser for images). Training: AdamW (lr 1e-3, weight decay
0.01), cosine decay to lr/100 over all steps (per step), label smoothing 0.1, batch 128,
shuffled every epoch, 10 epochs. PyTorch's default initialisation (nabla: Kaiming uniform).
Timed: the whole run, data in memory (as nabla's "s" in its last epoch line), test
evaluation after each epoch included as nabla does. Prints one JSON line.
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


def model():
    nn = torch.nn
    layers = []
    c_in = 1
    for c in (32, 64):
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Flatten(), nn.Linear(3136, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 10)]
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = bench_data.fashion_split(args.data_dir, "train")
    xt, yt = bench_data.fashion_split(args.data_dir, "t10k")
    mean, std = float(x.astype(np.float64).mean()), float(x.astype(np.float64).std())
    prep = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32)).reshape(-1, 1, 28, 28)
    x, xt = prep(x), prep(xt)
    y, yt = torch.from_numpy(y), torch.from_numpy(yt)
    net = model()
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
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
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
