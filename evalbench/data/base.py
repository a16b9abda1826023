"""The data contract every loader returns (DESIGN.md §4).

A loader gives one ``ImageSource`` per part the dataset ships (``train`` always, ``test`` where
it has its own): a torch ``Dataset`` of ``(uint8 image (C, H, W) tensor, int label)`` whose
``labels`` (N,) int64 are known without decoding any image, so splits, subsets and class counts
never touch pixels. Images decode when indexed (ImageFolder reads a file per item), so a task
of any size streams through a ``DataLoader``. Validation (and test, when the dataset has none)
are carved out of ``train`` by the task's split index file (:mod:`evalbench.data.splits`).

A loader also has a ``fingerprint``: a small JSON-able summary that changes whenever the data
does (label hashes, file names and sizes) and does not depend on where the data lies, so the
same data at another path keeps its identity and other data under the same task name does not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from evalbench.core.registry import Registry


@runtime_checkable
class ImageSource(Protocol):
    labels: np.ndarray  # (N,) int64, without decoding

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]: ...


class ArraySource(Dataset):
    """Images already in memory as a uint8 array (N, C, H, W): the small packaged datasets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        assert images.ndim == 4 and images.dtype == np.uint8, (images.shape, images.dtype)
        assert labels.ndim == 1 and len(labels) == len(images)
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])  # copy: arrays may be read-only


class SubsetSource(Dataset):
    """The items ``indices`` of ``source``, in that order."""

    def __init__(self, source: ImageSource, indices: np.ndarray) -> None:
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = source.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.source[int(self.indices[i])]


def array_items(source: ImageSource) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(images, indices)`` such that ``source[i]`` is the image ``images[indices[i]]``, where ``source`` is an
    :class:`ArraySource` or a :class:`SubsetSource` (of subsets) of one; None for any other source.

    A batch of such a source is one fancy index of the uint8 array (N, C, H, W), without an item's
    ``__getitem__`` per image (what extraction reads; a view's transformed copies go item by item).
    Subclasses that override ``__getitem__`` are other sources.
    """
    indices: Optional[np.ndarray] = None
    while isinstance(source, SubsetSource) and type(source).__getitem__ is SubsetSource.__getitem__:
        indices = source.indices if indices is None else source.indices[indices]
        source = source.source
    if not (isinstance(source, ArraySource) and type(source).__getitem__ is ArraySource.__getitem__):
        return None
    return source.images, np.arange(len(source), dtype=np.int64) if indices is None else indices


@dataclass(frozen=True)
class SourceParts:
    """What a loader returns: the dataset's own train part and, if it has one, its test part."""

    train: ImageSource
    test: Optional[ImageSource] = None


@dataclass(frozen=True)
class Loader:
    """``load(*, root, **params) -> SourceParts``; ``fingerprint(*, root, **params) -> dict``
    (cheap, path-independent; raises DatasetMissingError where ``load`` would)."""

    load: Callable[..., SourceParts]
    fingerprint: Callable[..., dict[str, Any]]


LOADERS: Registry[Loader] = Registry("dataset loader", "evalbench list loaders")
