#!/usr/bin/env python3
"""PyTorch counterpart of `nabla train --dataset text --arch gpt-tiny`: the same model, data,
split and settings (nanoGPT's CPU "baby GPT"), one JSON line with the validation loss, the
wall time and the peak RSS.

    python3 bench/gpt_reference.py --text FILE [--seed S] [--threads 2] [--steps 2000]
                                   [--dropout P] [--max-isa scalar|avx2|avx512]

Model: token + position embeddings (N(0, 0.02²)), 4 pre-LN blocks of width 128 with 4 heads
(causal attention, GELU tanh MLP of width 512; the projections into the residual stream
N(0, (0.02/√8)²)), a final layer norm, the head tied to the token embedding, no biases;
`--dropout P` (default 0, as nanoGPT's CPU configuration) drops where nanoGPT does and
`nabla train --dropout P` does: the embeddings' sum, the attention probabilities, the
attention's and the MLP's outputs.
Data: the text's sorted characters as the vocabulary; its first 90% for training, windows of
64 at random offsets; the last 10% for validation, 255–256 non-overlapping windows spread
evenly over it, exactly the ones nabla evaluates (`TextData::spread(256)`).
Training: batch 12, AdamW (lr 1e-3, β 0.9/0.99, ε 1e-8, weight decay 0.1 on every parameter,
as nabla's AdamW), clipping at norm 1, 100 warm-up steps (lr·(s+1)/100) then cosine to 1e-4
over the remaining steps; mean cross-entropy over all positions; a validation pass every 250
steps and at the end, as `nabla train --dataset text` does. Timed: from building the model to
the last validation pass (nabla's metrics.csv `seconds`).
"""
import json
import math
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_data  # noqa: E402
from bench_data import lr_at, windows  # noqa: E402

# `--max-isa T` holds torch's kernels to a tier (as nabla's NABLA_MAX_ISA): set before torch
# loads.
MAX_ISA = bench_data.hold_isa_from_argv()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, c, heads, depth, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.drop = torch.nn.Dropout(dropout)
        self.ln1 = torch.nn.LayerNorm(c, bias=False)
        self.qkv = torch.nn.Linear(c, 3 * c, bias=False)
        self.proj = torch.nn.Linear(c, c, bias=False)
        self.ln2 = torch.nn.LayerNorm(c, bias=False)
        self.fc = torch.nn.Linear(c, 4 * c, bias=False)
        self.out = torch.nn.Linear(4 * c, c, bias=False)
        for lin, std in [(self.qkv, 0.02), (self.proj, 0.02 / math.sqrt(2 * depth)),
                         (self.fc, 0.02), (self.out, 0.02 / math.sqrt(2 * depth))]:
            torch.nn.init.normal_(lin.weight, 0.0, std)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class Gpt(torch.nn.Module):
    def __init__(self, vocab, context, width=128, depth=4, heads=4, dropout=0.0):
        super().__init__()
        self.drop = torch.nn.Dropout(dropout)
        self.tok = torch.nn.Embedding(vocab, width)
        self.pos = torch.nn.Embedding(context, width)
        torch.nn.init.normal_(self.tok.weight, 0.0, 0.02)
        torch.nn.init.normal_(self.pos.weight, 0.0, 0.02)
        self.blocks = torch.nn.ModuleList(
            Block(width, heads, depth, dropout) for _ in range(depth))
        self.ln_f = torch.nn.LayerNorm(width, bias=False)

    def forward(self, ids):
        t = ids.shape[1]
        h = self.drop(self.tok(ids) + self.pos.weight[:t])
        for blk in self.blocks:
            h = blk(h)
        return self.ln_f(h) @ self.tok.weight.t()


def evaluate(model, data, starts, context):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for a in range(0, len(starts), 128):
            s = torch.tensor(starts[a:a + 128])
            idx = s[:, None] + torch.arange(context)[None, :]
            logits = model(data[idx])
            y = data[idx + 1]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def main():
    args = bench_data.gpt_args(__doc__)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    chars, ids, cut = bench_data.gpt_text(args.text)
    tokens = torch.tensor(ids, dtype=torch.long)
    train, val = tokens[:cut], tokens[cut:]
    val_starts = windows(val, args.context, 256)
    started = time.perf_counter()
    model = Gpt(len(chars), args.context, dropout=args.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8,
                            weight_decay=0.1)
    offsets = torch.arange(args.context)
    curve = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total=args.steps)
        s = torch.randint(len(train) - args.context - 1 + 1, (args.batch,))
        idx = s[:, None] + offsets[None, :]
        logits = model(train[idx])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), train[idx + 1].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            curve.append((step + 1, evaluate(model, val, val_starts, args.context)))
    val_loss = evaluate(model, val, val_starts, args.context)
    curve.append((args.steps, val_loss))
    seconds = time.perf_counter() - started
    print(json.dumps({
        "system": "pytorch", "version": torch.__version__, "workload": "gpt", "seed": args.seed,
        "max_isa": MAX_ISA, "threads": args.threads, "steps": args.steps, "dropout": args.dropout,
        "val_loss": val_loss,
        "val_bits_per_char": val_loss / math.log(2), "val_windows": len(val_starts),
        "last_train_loss": loss.item(), "seconds": seconds, "val_curve": curve,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
