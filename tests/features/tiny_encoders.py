"""A tiny encoder, synthetic image trees and an in-memory reference, for tests/features (not a test module).

Also imported by memory_probe.py, which runs in a subprocess.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from evalbench.encoders.base import DataConfig, Encoder, preprocess

CFG = DataConfig(in_chans=3, input_size=16, mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.2))


def _pooled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def tiny_encoder(*, in_chans: int = 3, dim: int = 32, seed: int = 0) -> Encoder:
    """conv -> ReLU -> dropout -> global average pool: (B, in_chans, S, S) -> (B, dim).

    Dropout makes train-mode outputs random, so extraction must put the encoder in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(in_chans, dim, 3, padding=1), nn.ReLU(), nn.Dropout(0.5),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Encoder("tiny-conv", model, _pooled, dim).train()


def reference_features(encoder: Encoder, images: np.ndarray, cfg: DataConfig = CFG) -> np.ndarray:
    """encoder(preprocess(all images)) in one batch, in eval mode: what extraction must reproduce."""
    was_training = encoder.training
    encoder.eval()
    with torch.inference_mode():
        out = encoder(preprocess(torch.from_numpy(np.ascontiguousarray(images)), cfg)).numpy().copy()
    encoder.train(was_training)
    return out


# --- synthetic ImageFolder trees -----------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    return yy, xx


def synthetic_image(i: int, size: int, classes: int) -> np.ndarray:
    """Image i (H, W, 3) uint8: smooth ramps that depend on i and its class (low entropy: small PNGs)."""
    c = i % classes
    yy, xx = _grid(size)
    arr = np.empty((size, size, 3), np.uint8)
    arr[..., 0] = (xx * (c + 1) + i) % 256
    arr[..., 1] = (yy * 3 + i // 7) % 256
    arr[..., 2] = (25 * c + (xx + yy) // 8) % 256
    return arr


def tree_file(i: int, classes: int) -> str:
    return f"train/c{i % classes}/{i:06d}.png"


def write_tree(root: Path, indices: range, *, size: int, classes: int) -> None:
    """root/train/c<k>/<i>.png for each i (class i % classes), PNG compression level 1."""
    for c in range(classes):
        (root / "train" / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in indices:
        Image.fromarray(synthetic_image(i, size, classes)).save(root / tree_file(i, classes), compress_level=1)


def tree_order(n: int, classes: int) -> np.ndarray:
    """The image indices in ImageFolder order (by class, then by file name)."""
    return np.concatenate([np.arange(c, n, classes) for c in range(classes)])


def tree_images(order: np.ndarray, *, size: int, classes: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, images (B, 3, size, size)) chunks in ``order``, generated in memory (PNG is lossless)."""
    for start in range(0, len(order), chunk):
        ids = order[start:start + chunk]
        yield start, np.stack([synthetic_image(int(i), size, classes).transpose(2, 0, 1) for i in ids])
