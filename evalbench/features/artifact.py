"""The features artifact: one directory per extraction, written whole or not at all.

``<dir>/features.npz`` holds ``x_<split>`` (N, D) float32 and ``y_<split>`` (N,) int64 per
split (plain arrays, read with ``allow_pickle=False``); ``<dir>/meta.json`` holds the format
version, the splits, ``dim``, ``num_classes`` and the caller's ``meta`` (provenance, timing).
The directory is assembled under a temp name and renamed into place
(:func:`evalbench.core.atomic.atomic_path`), so a reader sees a complete artifact or none.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from evalbench.core.atomic import atomic_path
from evalbench.core.errors import EvalbenchError

ARTIFACT_FORMAT = 1
NPZ_NAME = "features.npz"
META_NAME = "meta.json"


class FeaturesCorruptError(EvalbenchError):
    """A features directory exists but is incomplete or damaged (delete it to extract again)."""


@dataclass(frozen=True)
class Features:
    """Pooled (not L2-normalised) features per split, with labels and provenance."""

    x: dict[str, np.ndarray]  # split -> (N, D) float32
    y: dict[str, np.ndarray]  # split -> (N,) int64
    num_classes: int
    meta: dict = field(default_factory=dict)  # JSON-able: provenance, load report, timing

    @property
    def dim(self) -> int:
        first = self.x["train"] if "train" in self.x else next(iter(self.x.values()))
        return int(first.shape[1])

    def tensors(self, *splits: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, D) float32 and labels (N,) int64 of the given splits, concatenated, on device.

        Copies: arrays that arrive through Ray's object store or from files may be read-only.
        """
        x = torch.cat([torch.tensor(self.x[s], dtype=torch.float32) for s in splits])
        y = torch.cat([torch.tensor(self.y[s], dtype=torch.long) for s in splits])
        return x.to(device), y.to(device)


def _check(features: Features, where: str, error: type[Exception]) -> None:
    """Same splits in x and y; x (N, D) float32 with one D; y (N,) int64."""
    if set(features.x) != set(features.y) or not features.x:
        raise error(f"{where}: feature splits {sorted(features.x)} and label splits {sorted(features.y)} differ")
    dims = set()
    for s, x in features.x.items():
        y = features.y[s]
        if x.ndim != 2 or x.dtype != np.float32 or y.ndim != 1 or y.dtype != np.int64 or len(x) != len(y):
            raise error(f"{where}: split {s!r} has features {x.dtype}{x.shape} and labels {y.dtype}{y.shape}; "
                        "expected (N, D) float32 and (N,) int64")
        dims.add(x.shape[1])
    if len(dims) != 1:
        raise error(f"{where}: splits have different feature dimensions {sorted(dims)}")


def save_features(directory: Path, features: Features) -> Path:
    """Write ``features`` as the artifact ``directory`` (atomically; an existing one is kept)."""
    directory = Path(directory)
    _check(features, str(directory), ValueError)
    meta = {"format": ARTIFACT_FORMAT, "splits": sorted(features.x), "dim": features.dim,
            "num_classes": int(features.num_classes), "meta": features.meta}
    meta_text = json.dumps(meta, indent=1, allow_nan=False) + "\n"  # fails before writing anything
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        arrays = {**{f"x_{s}": x for s, x in features.x.items()}, **{f"y_{s}": y for s, y in features.y.items()}}
        _write_synced(tmp / NPZ_NAME, lambda f: np.savez(f, **arrays))
        _write_synced(tmp / META_NAME, lambda f: f.write(meta_text.encode()))
    return directory


def _write_synced(path: Path, write: Any) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def features_exist(directory: Path) -> bool:
    """Whether ``directory`` holds an artifact (both files; damage shows only on loading)."""
    directory = Path(directory)
    return (directory / NPZ_NAME).is_file() and (directory / META_NAME).is_file()


def load_features(directory: Path) -> Optional[Features]:
    """The artifact in ``directory``; None when the directory does not exist.

    A directory that exists but lacks a file, or holds a damaged or inconsistent one, raises
    :class:`FeaturesCorruptError` naming the file (delete the directory to extract again).
    """
    directory = Path(directory)
    if not directory.exists():
        return None
    meta_path, npz_path = directory / META_NAME, directory / NPZ_NAME
    hint = f"delete {directory} to extract the features again"
    try:
        meta = json.loads(meta_path.read_text())
        splits = [str(s) for s in meta["splits"]]
        num_classes, dim, inner = int(meta["num_classes"]), int(meta["dim"]), dict(meta.get("meta") or {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FeaturesCorruptError(f"{meta_path}: not a readable features meta file ({type(e).__name__}: {e}); "
                                   f"{hint}") from None
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            x = {s: z[f"x_{s}"] for s in splits}
            y = {s: z[f"y_{s}"] for s in splits}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise FeaturesCorruptError(f"{npz_path}: not a readable features file ({type(e).__name__}: {e}); "
                                   f"{hint}") from None
    features = Features(x, y, num_classes, inner)
    _check(features, str(npz_path), FeaturesCorruptError)
    if features.dim != dim:
        raise FeaturesCorruptError(f"{npz_path}: features have dimension {features.dim}, {meta_path} says {dim}; "
                                   f"{hint}")
    return features
