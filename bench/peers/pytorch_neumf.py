#!/usr/bin/python3
"""NeuMF in PyTorch on the CPU: the implementation a user would otherwise write.

Same model (GMF + MLP joined by a linear head, embeddings N(0, 0.01), He-uniform dense layers),
same data and leave-one-out split (exported by bench/export_split), uniform negatives that
reject the user's positives, BCE on logits, Adam, HR@10 / NDCG@10 among the same 99 candidates
with ties counted against the model. Prints one JSON line per epoch (HR@10 and NDCG@10 with
95% bootstrap intervals over users).

usage: pytorch_neumf.py SPLIT_DIR --epochs 20 --batch-size 256 --threads 2

Retracing tastebud (issue 13; bench/neumf_trace writes TRACE_DIR): --init-from TRACE_DIR/init starts
from tastebud's initial parameters, --samples-from TRACE_DIR trains on its epochs' rows in its batch
order, and --compare-to TRACE_DIR prints, per tensor, the largest difference from tastebud's
parameters after each step N that TRACE_DIR/stepN holds; --steps N stops after N steps.
"""
import argparse
import json
import math
import os
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


# tastebud's tensors by name (bench/neumf_trace), in the peer's modules; dense weights are stored
# [in x out] there, [out x in] here.
def tastebud_tensors(model):
    named = {"user_gmf": model.user_gmf.weight, "item_gmf": model.item_gmf.weight,
             "user_mlp": model.user_mlp.weight, "item_mlp": model.item_mlp.weight,
             "head_weight": model.head.weight, "head_bias": model.head.bias}
    linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
    for j, lin in enumerate(linears):
        named[f"dense{j}_weight"], named[f"dense{j}_bias"] = lin.weight, lin.bias
    return named


def read_tensors(directory):
    """DIR/tensors.json and DIR/NAME.f32, each in the peer's shape."""
    out = {}
    for t in json.load(open(f"{directory}/tensors.json")):
        v = np.fromfile(f"{directory}/{t['name']}.f32", dtype=np.float32).reshape(t["shape"])
        out[t["name"]] = v.T.copy() if t["name"].startswith("dense") and v.ndim == 2 else v
    return out


def load_tensors(model, directory):
    values = read_tensors(directory)
    with torch.no_grad():
        for name, w in tastebud_tensors(model).items():
            w.copy_(torch.from_numpy(values[name]).reshape(w.shape))


def compare_tensors(model, directory, steps):
    """Per tensor: the largest |peer - tastebud| and that relative to tastebud's largest |value|."""
    values = read_tensors(directory)
    for name, w in tastebud_tensors(model).items():
        ours = w.detach().numpy().reshape(values[name].shape).astype(np.float64)
        diff = np.abs(ours - values[name]).max()
        print(json.dumps({"step": steps, "tensor": name, "max_abs_diff": float(diff),
                          "max_rel_diff": float(diff / max(np.abs(values[name]).max(), 1e-30))}))


def traced_epoch(directory, epoch):
    """tastebud's rows of an epoch (1-based) in its batch order."""
    read = lambda part, dtype: np.fromfile(f"{directory}/epoch{epoch}_{part}", dtype=dtype)
    return read("user.u32", np.uint32).astype(np.int64), read("item.u32", np.uint32).astype(np.int64), \
        read("label.f32", np.float32)


class LazyAdam:
    """Adam on embedding tables with sparse gradients: only the rows a step uses move, their
    moments too, with the step's bias corrections and epsilon on the corrected sqrt(v), as
    tastebud's lazy Adam and torch.optim.Adam compute it. (torch.optim.SparseAdam adds epsilon to
    the raw sqrt(v), which is up to 32 times larger in the first steps.)"""

    def __init__(self, tables, lr, betas=(0.9, 0.999), eps=1e-8):
        self.tables, self.lr, self.betas, self.eps, self.step_count = tables, lr, betas, eps, 0
        self.moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w in tables]

    def zero_grad(self):
        for w in self.tables:
            w.grad = None

    @torch.no_grad()
    def step(self):
        self.step_count += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        for w, (m, v) in zip(self.tables, self.moments):
            g = w.grad.coalesce()
            rows, values = g.indices()[0], g.values()
            m[rows] = b1 * m[rows] + (1 - b1) * values
            v[rows] = b2 * v[rows] + (1 - b2) * values * values
            w[rows] -= self.lr / c1 * m[rows] / ((v[rows] / c2).sqrt() + self.eps)


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
                   help="lazy Adam on the embeddings (a row moves only in steps that use it, as tastebud's Adam)")
    p.add_argument("--init-from", help="start from tastebud's initial parameters (neumf_trace's TRACE/init)")
    p.add_argument("--samples-from", help="train on tastebud's epochs' rows in its batch order (neumf_trace's TRACE)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: every epoch)")
    p.add_argument("--compare-to", help="print each tensor's difference from neumf_trace's TRACE/stepN after step N")
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
    if a.init_from:
        load_tensors(model, a.init_from)
    if a.lazy_embeddings:
        tables = [model.user_gmf.weight, model.item_gmf.weight, model.user_mlp.weight, model.item_mlp.weight]
        dense = [w for w in model.parameters() if all(w is not t for t in tables)]
        opts = [LazyAdam(tables, lr=a.lr), torch.optim.Adam(dense, lr=a.lr)]
    else:
        opts = [torch.optim.Adam(model.parameters(), lr=a.lr)]
    loss_fn = nn.BCEWithLogitsLoss()
    steps = 0
    for epoch in range(1, a.epochs + 1):
        if a.samples_from:
            u, i, y = traced_epoch(a.samples_from, epoch)
        else:
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
            steps += 1
            if a.compare_to and os.path.isdir(f"{a.compare_to}/step{steps}"):
                compare_tensors(model, f"{a.compare_to}/step{steps}", steps)
            if steps == a.steps:
                return
        seconds = time.perf_counter() - start
        hits, gains = evaluate(model, eval_users, eval_items, candidates)
        print(json.dumps({"epoch": epoch, "loss": total / len(u), "samples": len(u), "seconds": seconds,
                          "samples_per_second": len(u) / seconds, "hr@10": float(hits.mean()),
                          "ndcg@10": float(gains.mean()), "hr@10_ci": bootstrap_interval(hits),
                          "ndcg@10_ci": bootstrap_interval(gains)}), flush=True)


if __name__ == "__main__":
    main()
