#!/usr/bin/python3
"""NeuMF in PyTorch on the CPU: the implementation a user would otherwise write.

Same model (GMF + MLP joined by a linear head, embeddings N(0, 0.01), He-uniform dense layers),
same data and leave-one-out split (exported by bench/export_split), uniform negatives that
reject the user's positives, BCE on logits, Adam, HR@10 / NDCG@10 among the same 99 candidates
with ties counted against the model. Prints one JSON line per epoch (HR@10 and NDCG@10 with
95% bootstrap intervals over users).

usage: pytorch_neumf.py SPLIT_DIR --epochs 20 --batch-size 256 --threads 2
"""
import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn


class NeuMF(nn.Module):
    def __init__(self, users, items, factors, layers, sparse=False):
        super().__init__()
        e = layers[0] // 2
        self.user_gmf = nn.Embedding(users, factors, sparse=sparse)
        self.item_gmf = nn.Embedding(items, factors, sparse=sparse)
        self.user_mlp = nn.Embedding(users, e, sparse=sparse)
        self.item_mlp = nn.Embedding(items, e, sparse=sparse)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)
        dense = []
        for a, b in zip(layers[:-1], layers[1:]):
            lin = nn.Linear(a, b)
            nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            dense += [lin, nn.ReLU()]
        self.mlp = nn.Sequential(*dense)
        self.head = nn.Linear(factors + layers[-1], 1)

    def forward(self, u, i):
        gmf = self.user_gmf(u) * self.item_gmf(i)
        mlp = self.mlp(torch.cat([self.user_mlp(u), self.item_mlp(i)], dim=1))
        return self.head(torch.cat([gmf, mlp], dim=1)).squeeze(1)


def sample_epoch(rng, users, items, num_items, negatives, positive_keys):
    """Positives and `negatives` uniform negatives each, rejecting the user's positives."""
    n = len(users)
    neg_users = np.repeat(users, negatives)
    neg_items = rng.integers(0, num_items, size=n * negatives, dtype=np.int64)
    for _ in range(32):
        bad = np.isin(neg_users * num_items + neg_items, positive_keys)
        if not bad.any():
            break
        neg_items[bad] = rng.integers(0, num_items, size=int(bad.sum()), dtype=np.int64)
    u = np.concatenate([users, neg_users])
    i = np.concatenate([items, neg_items])
    y = np.concatenate([np.ones(n, dtype=np.float32), np.zeros(n * negatives, dtype=np.float32)])
    order = rng.permutation(len(u))
    return u[order], i[order], y[order]


def evaluate(model, eval_users, eval_items, candidates):
    model.eval()
    with torch.no_grad():
        m = candidates.shape[1]
        users = torch.from_numpy(np.repeat(eval_users, m + 1))
        items = torch.from_numpy(np.concatenate([eval_items[:, None], candidates], axis=1).reshape(-1))
        scores = torch.cat([model(users[k:k + 65536], items[k:k + 65536])
                            for k in range(0, len(users), 65536)]).numpy().reshape(-1, m + 1)
    model.train()
    rank = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)
    hit = rank < 10
    return hit.astype(np.float64), hit * (math.log(2) / np.log(rank + 2.0))


def bootstrap_interval(values, resamples=1000, seed=1):
    """95% percentile interval of the mean over users, resampling users with replacement."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("split")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--factors", type=int, default=8)
    p.add_argument("--layers", default="64,32,16,8")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lazy-embeddings", action="store_true",
                   help="SparseAdam on the embeddings (a row moves only in steps that use it, as tastebud's Adam)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    meta = json.load(open(f"{a.split}/meta.json"))
    load = lambda name: np.fromfile(f"{a.split}/{name}.u32", dtype=np.uint32).astype(np.int64)
    users, items = load("train_user"), load("train_item")
    eval_users, eval_items = load("eval_user"), load("eval_item")
    candidates = load("eval_candidates").reshape(len(eval_users), -1)
    num_items = meta["num_items"]
    positive_keys = np.unique(users * num_items + items)
    model = NeuMF(meta["num_users"], num_items, a.factors, [int(x) for x in a.layers.split(",")], a.lazy_embeddings)
    if a.lazy_embeddings:
        tables = [model.user_gmf.weight, model.item_gmf.weight, model.user_mlp.weight, model.item_mlp.weight]
        dense = [w for w in model.parameters() if all(w is not t for t in tables)]
        opts = [torch.optim.SparseAdam(tables, lr=a.lr), torch.optim.Adam(dense, lr=a.lr)]
    else:
        opts = [torch.optim.Adam(model.parameters(), lr=a.lr)]
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(1, a.epochs + 1):
        u, i, y = sample_epoch(rng, users, items, num_items, a.negatives, positive_keys)
        u, i, y = torch.from_numpy(u), torch.from_numpy(i), torch.from_numpy(y)
        start = time.perf_counter()
        total = 0.0
        for k in range(0, len(u), a.batch_size):
            for opt in opts:
                opt.zero_grad()
            loss = loss_fn(model(u[k:k + a.batch_size], i[k:k + a.batch_size]), y[k:k + a.batch_size])
            loss.backward()
            for opt in opts:
                opt.step()
            total += loss.item() * len(u[k:k + a.batch_size])
        seconds = time.perf_counter() - start
        hits, gains = evaluate(model, eval_users, eval_items, candidates)
        print(json.dumps({"epoch": epoch, "loss": total / len(u), "samples": len(u), "seconds": seconds,
                          "samples_per_second": len(u) / seconds, "hr@10": float(hits.mean()),
                          "ndcg@10": float(gains.mean()), "hr@10_ci": bootstrap_interval(hits),
                          "ndcg@10_ci": bootstrap_interval(gains)}), flush=True)


if __name__ == "__main__":
    main()
