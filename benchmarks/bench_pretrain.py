"""Pretraining step throughput: evalbench's trainer vs a plain hand-written PyTorch loop.

For each method (SimCLR, MoCo v2, BYOL, SimSiam) both sides train the same model
(builtin:small-cnn + the same projection head / predictor), with the same loss, the same
augmentations (evalbench's batched pipeline: crop, colour jitter, grayscale, flip) and the same
batch, on the same synthetic 32x32 RGB images, for the same number of steps. The hand-written
loop is what a researcher would write without a framework: index a uint8 tensor, augment,
normalise, forward both views, inline loss, AdamW step, EMA / queue updates inline.

    .venv/bin/python benchmarks/bench_pretrain.py [--threads 2] [--images 2048] [--batch 256] [--epochs 3] [--repeats 2]

Timed: the whole training call on each side (model build included: under 1% of the time),
best of --repeats, sides alternating. Prints images/s and the ratio evalbench / hand-written, against
the plain (NCHW) loop and against the same loop in channels_last, the layout evalbench trains in.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from evalbench.data.base import ArraySource
from evalbench.encoders import build_encoder
from evalbench.pretrain.augment import build_augment
from evalbench.pretrain.config import parse_pretrain_config
from evalbench.pretrain.trainer import pretrain

AUG = {"crop": {"enabled": True, "scale": [0.2, 1.0]},
       "color_jitter": {"enabled": True, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "p": 0.8},
       "grayscale": {"enabled": True, "p": 0.2}, "blur": {"enabled": False}, "flip": {"enabled": True, "p": 0.5},
       "rotation": {"enabled": False}}
HEAD = {"kind": "mlp", "hidden_dim": 256, "out_dim": 64, "depth": 2, "bn_out": False}
EXTRA = {"simclr": {"loss": {"temperature": 0.5}},
         "moco": {"loss": {"temperature": 0.2}, "queue": {"size": 1024}, "ema": {"momentum": 0.99, "schedule": "constant"}},
         "byol": {"predictor": {"enabled": True, "hidden_dim": 256}, "ema": {"momentum": 0.99, "schedule": "constant"}},
         "simsiam": {"predictor": {"enabled": True, "hidden_dim": 64}, "loss": {"stop_gradient": True}}}


def config(method: str, *, batch: int, epochs: int):
    raw = {"method": method, "arch": "builtin:small-cnn", "task": "digits", "seed": 0, "epochs": epochs,
           "batch_size": batch, "preprocessing": {"in_chans": 3, "mean": [0.5], "std": [0.5], "input_size": 32},
           "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant"},
           "head": HEAD, "augment": AUG, **EXTRA[method]}
    return parse_pretrain_config(raw, where=f"bench {method}")


def mlp(i: int, h: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, o))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / t).fill_diagonal_(float("-inf"))
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def hand_loop(method: str, images: torch.Tensor, cfg, *, nhwc: bool = False) -> float:
    """A plain loop, written as a researcher would; returns the wall time. ``nhwc``: the same loop with
    the model and the views in channels_last, as evalbench's trainer runs them (the strict peer)."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    enc = build_encoder("builtin:small-cnn", in_chans=3).model  # the same nn.Module a user would write
    net = nn.Sequential(enc, mlp(128, 256, 64))
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    net.to(memory_format=fmt)
    pred = mlp(64, EXTRA[method].get("predictor", {}).get("hidden_dim", 64), 64) if method in ("byol", "simsiam") else None
    target = copy.deepcopy(net).requires_grad_(False) if method in ("moco", "byol") else None
    queue = F.normalize(torch.randn(1024, 64), dim=1) if method == "moco" else None
    params = list(net.parameters()) + (list(pred.parameters()) if pred else [])
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    augment = build_augment(cfg.augment, size=32)
    mean = torch.full((1, 3, 1, 1), 0.5)
    g = torch.Generator().manual_seed(0)
    ptr = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(images), generator=g)
        for s in range(len(images) // cfg.batch_size):
            b = images[perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]]
            x1 = ((augment(b).float() / 255 - mean) / 0.5).contiguous(memory_format=fmt)
            x2 = ((augment(b).float() / 255 - mean) / 0.5).contiguous(memory_format=fmt)
            if method == "simclr":
                loss = nt_xent(net(x1), net(x2), 0.5)
            elif method == "moco":
                q = F.normalize(net(x1), dim=1)
                with torch.no_grad():
                    k = F.normalize(target(x2), dim=1)
                logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
                loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
            elif method == "byol":
                p1, p2 = pred(net(x1)), pred(net(x2))
                with torch.no_grad():
                    z1, z2 = target(x1), target(x2)
                loss = (2 - 2 * F.cosine_similarity(p1, z2).mean()) + (2 - 2 * F.cosine_similarity(p2, z1).mean())
            else:
                z1, z2 = net(x1), net(x2)
                p1, p2 = pred(z1), pred(z2)
                loss = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if target is not None:
                with torch.no_grad():
                    for pt, po in zip(target.parameters(), net.parameters()):
                        pt.mul_(0.99).add_(po, alpha=0.01)
            if queue is not None:
                n = len(k)
                idx = (torch.arange(n) + ptr) % len(queue)
                queue[idx] = k
                ptr = (ptr + n) % len(queue)
    return time.perf_counter() - t0


def evalbench_run(images: np.ndarray, labels: np.ndarray, cfg) -> float:
    t0 = time.perf_counter()
    pretrain(cfg, ArraySource(images, labels), num_classes=10, state_dir=None, device=torch.device("cpu"))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=["simclr", "moco", "byol", "simsiam"])
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.images, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, a.images).astype(np.int64)
    seen = (a.images // a.batch) * a.batch * a.epochs
    rows = []
    for method in a.methods:
        cfg = config(method, batch=a.batch, epochs=a.epochs)
        ours, hand, hand_nhwc = [], [], []
        for _ in range(a.repeats):
            ours.append(evalbench_run(images, labels, cfg))
            hand.append(hand_loop(method, torch.from_numpy(images), cfg))
            hand_nhwc.append(hand_loop(method, torch.from_numpy(images), cfg, nhwc=True))
        o, h, hn = seen / min(ours), seen / min(hand), seen / min(hand_nhwc)
        rows.append({"method": method, "evalbench_img_s": round(o, 1), "hand_img_s": round(h, 1),
                     "ratio": round(o / h, 3), "hand_nhwc_img_s": round(hn, 1), "ratio_vs_nhwc": round(o / hn, 3)})
    head = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__} ({a.threads} threads); {a.images} images 32x32x3, batch {a.batch}, "
            f"{a.epochs} epochs, best of {a.repeats}")
    print(head)
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
