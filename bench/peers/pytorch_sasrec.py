#!/usr/bin/env python3
"""SASRec (Kang and McAuley 2018, pre-LN) trained with gBCE (Petrov and Macdonald 2023) in PyTorch:
the peer of tastebud's `--model sasrec`, on the split bench/export_split writes (each user's
training sequence and the leave-one-out evaluation that `tastebud train --eval loo` uses).

  python bench/peers/pytorch_sasrec.py SPLIT_DIR [--epochs 20] [--threads 2] [--device cuda] ...

Architecture (keep in step with tastebud's sasrec):
- item table E of num_items + 1 rows (row 0 padding, items shifted by +1), width d, shared by the
  input and the output; learned positional table P of L rows (L = --max-sequence).
- x = Dropout(E[item] * sqrt(d) + P[position]), padding positions zeroed. Sequences right-aligned:
  inputs s[0..n-2] predict targets s[1..n-1], the last L of them.
- --blocks pre-LN blocks: x += Dropout(Wo MHA(LN1(x))) (causal and key-padding masks, q/k/v/o with
  bias), x += Dropout(W2 ReLU(W1 LN2(x) + b1) + b2) (hidden width d), padding zeroed after each.
  Final LayerNorm gives h; LayerNorm eps 1e-5.
- score(h_t, i) = h_t . E[i]; gBCE with k negatives per position drawn uniformly from all items
  (the user's own items are not rejected): beta = alpha (t (1 - 1/alpha) + 1/alpha),
  alpha = k / (num_items - 1); loss = beta softplus(-z+) + sum softplus(z-), averaged over the
  non-padding positions. Adam, users shuffled each epoch.
- Init: every weight matrix and both embedding tables xavier-normal (as the widely used pmixer
  SASRec.pytorch), biases 0, LayerNorm 1/0.
Prints one JSON line per epoch: epoch, loss, seconds (training only), positions (non-padding
target positions), positions_per_s, hr@10, ndcg@10 (rank = candidates scoring >= the held-out
item, ties against).
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read(path, dtype):
    return np.fromfile(path, dtype=dtype)


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        assert d % heads == 0, "--hidden must be a multiple of --heads"
        self.heads = heads
        self.ln1 = nn.LayerNorm(d, eps=1e-5)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-5)
        self.w1 = nn.Linear(d, d)
        self.w2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask, allowed):
        # x [B, L, d]; mask [B, L, 1] (1 = item); allowed [B, 1, L, L] (query t may see key s).
        b, L, d = x.shape
        hd = d // self.heads
        y = self.ln1(x)
        q = self.q(y).view(b, L, self.heads, hd).transpose(1, 2)
        k = self.k(y).view(b, L, self.heads, hd).transpose(1, 2)
        v = self.v(y).view(b, L, self.heads, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        # A finite fill: a padding query sees no key, its row is uniform and zeroed below.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        a = torch.softmax(scores, dim=-1) @ v
        a = a.transpose(1, 2).reshape(b, L, d)
        x = x + self.drop(self.o(a))
        x = x + self.drop(self.w2(F.relu(self.w1(self.ln2(x)))))
        return x * mask


class SASRec(nn.Module):
    def __init__(self, num_items, d, L, blocks, heads, dropout):
        super().__init__()
        self.d = d
        self.item = nn.Embedding(num_items + 1, d)
        self.pos = nn.Embedding(L, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(blocks))
        self.ln = nn.LayerNorm(d, eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, seq):
        # seq [B, L] shifted item ids, 0 = padding (left). Returns h [B, L, d].
        L = seq.shape[1]
        keep = seq != 0
        mask = keep.unsqueeze(-1).to(self.item.weight.dtype)
        x = self.item(seq) * math.sqrt(self.d) + self.pos.weight[:L].unsqueeze(0)
        x = self.drop(x) * mask
        allowed = (self.causal[:L, :L].unsqueeze(0) & keep.unsqueeze(1)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask, allowed)
        return self.ln(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--max-sequence", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--negatives", type=int, default=64)
    ap.add_argument("--gbce-t", type=float, default=0.75)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the sequences, negatives and model on the GPU)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    meta = json.load(open(os.path.join(args.split, "meta.json")))
    num_users, num_items, cands = meta["num_users"], meta["num_items"], meta["candidates_per_user"]
    offsets = read(os.path.join(args.split, "train_seq_offsets.u64"), np.uint64).astype(np.int64)
    items = read(os.path.join(args.split, "train_seq_items.u32"), np.uint32).astype(np.int64) + 1
    assert len(offsets) == num_users + 1 and offsets[-1] == len(items)
    eval_user = read(os.path.join(args.split, "eval_user.u32"), np.uint32).astype(np.int64)
    eval_item = read(os.path.join(args.split, "eval_item.u32"), np.uint32).astype(np.int64) + 1
    eval_cand = read(os.path.join(args.split, "eval_candidates.u32"), np.uint32).astype(np.int64) + 1
    eval_cand = eval_cand.reshape(len(eval_user), cands)
    L = args.max_sequence

    # Training rows: users with at least two items, right-aligned input and target.
    train_in, train_tgt = [], []
    for u in range(num_users):
        s = items[offsets[u]:offsets[u + 1]]
        if len(s) < 2:
            continue
        inp, tgt = s[:-1][-L:], s[1:][-L:]
        a, b = np.zeros(L, np.int64), np.zeros(L, np.int64)
        a[L - len(inp):], b[L - len(tgt):] = inp, tgt
        train_in.append(a)
        train_tgt.append(b)
    train_in = torch.from_numpy(np.stack(train_in)).to(dev)
    train_tgt = torch.from_numpy(np.stack(train_tgt)).to(dev)
    eval_in = np.zeros((len(eval_user), L), np.int64)
    for r, u in enumerate(eval_user):
        s = items[offsets[u]:offsets[u + 1]][-L:]
        eval_in[r, L - len(s):] = s
    eval_in = torch.from_numpy(eval_in).to(dev)
    eval_scored = torch.from_numpy(np.concatenate([eval_item[:, None], eval_cand], axis=1)).to(dev)

    model = SASRec(num_items, args.hidden, L, args.blocks, args.heads, args.dropout).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    k = args.negatives
    alpha = k / (num_items - 1)
    beta = alpha * (args.gbce_t * (1 - 1 / alpha) + 1 / alpha)
    gen = torch.Generator(device=dev).manual_seed(args.seed)

    def clock():
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(train_in))).to(dev)
        start = clock()
        total_loss, positions = torch.zeros((), dtype=torch.float64, device=dev), 0
        for b0 in range(0, len(order), args.batch_size):
            idx = order[b0:b0 + args.batch_size]
            seq, tgt = train_in[idx], train_tgt[idx]
            h = model(seq)
            valid = tgt != 0
            hv, pos = h[valid], tgt[valid]  # [P, d], [P]
            n = pos.shape[0]
            neg = torch.randint(1, num_items + 1, (n, k), generator=gen, device=dev)
            E = model.item.weight
            z_pos = (hv * E[pos]).sum(-1)
            z_neg = torch.bmm(E[neg], hv.unsqueeze(-1)).squeeze(-1)  # [P, k]
            loss = (beta * F.softplus(-z_pos) + F.softplus(z_neg).sum(-1)).sum() / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach().double() * n
            positions += n
        seconds = clock() - start
        total_loss = total_loss.item()

        model.eval()
        hits, ndcg = 0.0, 0.0
        with torch.no_grad():
            for b0 in range(0, len(eval_in), args.eval_batch):
                h = model(eval_in[b0:b0 + args.eval_batch])[:, -1]  # [B, d]
                scored = eval_scored[b0:b0 + args.eval_batch]
                s = torch.bmm(model.item.weight[scored], h.unsqueeze(-1)).squeeze(-1)  # [B, 1 + c]
                rank = (s[:, 1:] >= s[:, :1]).sum(1)
                top = rank < 10
                hits += top.sum().item()
                ndcg += (top.double() / torch.log2(rank.double() + 2)).sum().item()
        print(json.dumps({"epoch": epoch, "loss": round(total_loss / max(positions, 1), 6),
                          "seconds": round(seconds, 3), "positions": positions,
                          "positions_per_s": round(positions / seconds, 1),
                          "hr@10": round(hits / len(eval_in), 6), "ndcg@10": round(ndcg / len(eval_in), 6)}),
              flush=True)


if __name__ == "__main__":
    main()
