#!/usr/bin/env python3
"""NeuMF in PyTorch on the GPU, trained the way a GPU-minded engineer would write it (after the
pipeline of NVIDIA's DeepLearningExamples NCF): the positives live on the device, each epoch draws
its uniform negatives there and shuffles with one randperm, BCE on logits, fused Adam. The model is
pytorch_neumf.py's (the CPU peer's, same init). The GPU check runs it on the split bench/export_split
writes of the same shop tastebud trains on, beside tastebud, for each precision and batch size.

  python3 bench/peers/pytorch_neumf_gpu.py SPLIT_DIR [--variants fp32,tf32,bf16] [--batches 65536,1048576]

Variants: fp32 (TF32 off), tf32 (TF32 matmuls), bf16 (autocast to bfloat16, fp32 master weights).
Prints one JSON line per (variant, batch): samples/s over one timed epoch after a warm-up of a few
steps (samples: positives and negatives, as tastebud counts them), and that epoch's mean loss.
Negatives are not rejected against the user's positives (as NVIDIA's pipeline), so its per-sample
work is a little lighter than tastebud's.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_neumf import NeuMF  # noqa: E402


def positives(split, device):
    meta = json.load(open(os.path.join(split, "meta.json")))
    users = np.fromfile(os.path.join(split, "train_user.u32"), dtype=np.uint32).astype(np.int64)
    items = np.fromfile(os.path.join(split, "train_item.u32"), dtype=np.uint32).astype(np.int64)
    return meta["num_users"], meta["num_items"], torch.from_numpy(users).to(device), torch.from_numpy(items).to(device)


def epoch_rows(users, items, num_items, negatives, generator):
    """Every positive once and `negatives` uniform items beside it, shuffled, on the device."""
    n = users.numel()
    neg_items = torch.randint(0, num_items, (n * negatives,), device=users.device, generator=generator)
    u = torch.cat([users, users.repeat(negatives)])
    i = torch.cat([items, neg_items])
    y = torch.cat([torch.ones(n, device=users.device), torch.zeros(n * negatives, device=users.device)])
    order = torch.randperm(u.numel(), device=users.device, generator=generator)
    return u[order], i[order], y[order]


def run(args, variant, batch, data):
    num_users, num_items, users, items = data
    torch.backends.cuda.matmul.allow_tf32 = variant == "tf32"
    torch.backends.cudnn.allow_tf32 = variant == "tf32"
    torch.manual_seed(args.seed)
    layers = [int(x) for x in args.layers.split(",")]
    model = NeuMF(num_users, num_items, args.factors, layers).to(users.device)
    cuda = users.device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=cuda)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator(device=users.device).manual_seed(args.seed)

    def step(u, i, y):
        with torch.autocast(users.device.type, dtype=torch.bfloat16, enabled=variant == "bf16"):
            loss = loss_fn(model(u, i).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    u, i, y = epoch_rows(users, items, num_items, args.negatives, generator)
    for b0 in range(0, min(args.warmup, u.numel() // batch) * batch, batch):  # warm-up: cuBLAS, caches
        step(u[b0:b0 + batch], i[b0:b0 + batch], y[b0:b0 + batch])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    u, i, y = epoch_rows(users, items, num_items, args.negatives, generator)
    total = torch.zeros((), dtype=torch.float64, device=users.device)
    for b0 in range(0, u.numel(), batch):
        n = min(batch, u.numel() - b0)
        total += step(u[b0:b0 + n], i[b0:b0 + n], y[b0:b0 + n]).double() * n
    sync()
    seconds = time.perf_counter() - start
    return {"variant": variant, "batch": batch, "samples": u.numel(), "seconds": round(seconds, 3),
            "samples_per_s": round(u.numel() / seconds, 1), "loss": round(total.item() / u.numel(), 6),
            "torch": torch.__version__}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("split")
    p.add_argument("--variants", default="fp32,tf32,bf16")
    p.add_argument("--batches", default="65536,1048576")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--layers", default="256,256,128,64")
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed epoch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cuda", help="cuda; cpu only to try the script without a GPU")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_neumf_gpu: no CUDA device")
    data = positives(args.split, torch.device(args.device))
    for batch in (int(b) for b in args.batches.split(",")):
        for variant in args.variants.split(","):
            print(json.dumps(run(args, variant, batch, data)), flush=True)


if __name__ == "__main__":
    main()
