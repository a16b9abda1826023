"""The data contract every loader returns.

A loader reads one dataset into memory as uint8 arrays ``(N, C, H, W)`` plus int64 labels,
separately for the dataset's own parts: ``train`` always, ``test`` where the dataset ships one.
Validation (and test, when the dataset has none) are carved out of ``train`` by the index file
of the task (tasks/splits/), see :mod:`evalbench.tasks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from evalbench.registry import Registry


@dataclass(frozen=True)
class ImageArrays:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        assert self.images.ndim == 4 and self.images.dtype == np.uint8, (self.images.shape, self.images.dtype)
        assert self.labels.ndim == 1 and len(self.labels) == len(self.images)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class SourceParts:
    """What a loader returns: the dataset's own train part and, if it has one, its test part."""

    train: ImageArrays
    test: Optional[ImageArrays] = None


# a loader: (*, root: Optional[Path], **params from the task YAML) -> SourceParts
LOADERS: Registry[Callable[..., SourceParts]] = Registry("dataset loader", "evalbench list loaders")
