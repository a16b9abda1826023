"""Frozen-feature extraction, once per (checkpoint, task), cached on disk.

The cache key hashes everything that changes the bytes (DESIGN.md §7.5): the checkpoint's
sha256 (or random-init recipe), architecture, preprocessing, task name@version, the split
file's sha256 and this module's FEATURES_VERSION.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evalbench.checkpoints import CheckpointSpec, Preprocessing, checkpoint_identity, load_strict, read_state_dict
from evalbench.encoders import build_encoder
from evalbench.tasks import TaskData, TaskSpec, load_task, read_split_file

FEATURES_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Features:
    """L2-unnormalised pooled features per split, with labels and provenance."""

    x: dict[str, np.ndarray]  # split -> (N, D) float32
    y: dict[str, np.ndarray]  # split -> (N,) int64
    num_classes: int
    meta: dict = field(default_factory=dict)  # key, load report, timing, cache hit

    @property
    def dim(self) -> int:
        return int(self.x["train"].shape[1])

    def tensors(self, *splits: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, D) float32 and labels (N,) of the given splits, concatenated, on device.

        Copies: arrays that arrive through Ray's object store are read-only.
        """
        x = torch.cat([torch.tensor(self.x[s], dtype=torch.float32) for s in splits])
        y = torch.cat([torch.tensor(self.y[s], dtype=torch.long) for s in splits])
        return x.to(device), y.to(device)


def preprocess(batch: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float (B, in_chans, S, S)."""
    x = batch.float().div_(255.0)
    c = x.shape[1]
    if c != prep.in_chans:
        if c == 1:
            x = x.expand(-1, prep.in_chans, -1, -1)  # grayscale -> repeated channels
        elif prep.in_chans == 1:
            x = x.mean(dim=1, keepdim=True)  # RGB -> grayscale
        else:
            raise ValueError(f"cannot map {c} image channels to in_chans={prep.in_chans}")
    if prep.input_size is not None and tuple(x.shape[-2:]) != (prep.input_size, prep.input_size):
        x = F.interpolate(x, size=(prep.input_size, prep.input_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(prep.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode(encoder: nn.Module, images: np.ndarray, *, prep: Preprocessing, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Encoder in eval mode over uint8 images (N, C, H, W) -> features (N, D) float32."""
    encoder.eval().to(device)
    out = []
    for i in range(0, len(images), batch_size):
        batch = torch.tensor(images[i : i + batch_size], device=device)  # copy: arrays may be read-only
        out.append(encoder(preprocess(batch, prep)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, encoder.num_features), np.float32)


def load_encoder(spec: CheckpointSpec) -> tuple[nn.Module, dict]:
    """Build the architecture and fill it strictly from the checkpoint (or seeded random init)."""
    if spec.random_init:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(spec.init_seed)
            encoder = build_encoder(spec.arch, in_chans=spec.preprocessing.in_chans)
        return encoder, {"random_init": True, "init_seed": spec.init_seed}
    encoder = build_encoder(spec.arch, in_chans=spec.preprocessing.in_chans)
    report = load_strict(encoder, read_state_dict(spec.path), arch=spec.arch, skip_missing=spec.skip_missing)
    return encoder, report.as_dict()


def feature_key(ckpt_id: str, spec: CheckpointSpec, task: TaskSpec, split_sha: str) -> str:
    payload = {"v": FEATURES_VERSION, "ckpt": ckpt_id, "arch": spec.arch, "prep": spec.preprocessing.as_dict(),
               "skip": list(spec.skip_missing), "task": task.ref, "splits": split_sha}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _from_npz(path: Path, num_classes: int, meta: dict) -> Features:
    with np.load(path, allow_pickle=False) as z:
        return Features({s: z[f"x_{s}"] for s in SPLITS}, {s: z[f"y_{s}"] for s in SPLITS}, num_classes, meta)


def get_features(spec: CheckpointSpec, task: TaskSpec, *, cache_dir: Optional[Path], device: torch.device,
                 ckpt_id: Optional[str] = None) -> Features:
    """Features of all three splits, from the disk cache when present, else extracted (and cached)."""
    t0 = time.perf_counter()
    ckpt_id = ckpt_id or checkpoint_identity(spec)
    _, split_sha = read_split_file(task)
    key = feature_key(ckpt_id, spec, task, split_sha)
    path = cache_dir / f"{key}.npz" if cache_dir is not None else None
    meta = {"features_key": key}
    if path is not None and path.exists():
        return _from_npz(path, task.num_classes, {**meta, "cache": "hit", "load": _load_meta(path)})
    data: TaskData = load_task(task)
    encoder, load_report = load_encoder(spec)
    t1 = time.perf_counter()
    parts = {"train": data.train, "val": data.val, "test": data.test}
    x = {s: encode(encoder, parts[s].images, prep=spec.preprocessing, device=device) for s in SPLITS}
    y = {s: parts[s].labels for s in SPLITS}
    meta.update(cache="miss", load=load_report, dataset_s=round(t1 - t0, 3), extract_s=round(time.perf_counter() - t1, 3), dim=int(x["train"].shape[1]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".json").write_text(json.dumps(load_report))  # before the .npz that marks a hit
        _save_npz(path, {**{f"x_{s}": x[s] for s in SPLITS}, **{f"y_{s}": y[s] for s in SPLITS}})
    return Features(x, y, task.num_classes, meta)


def _load_meta(path: Path) -> dict:
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}
