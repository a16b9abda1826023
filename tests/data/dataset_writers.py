"""Tiny files in each real dataset format, for the tests under tests/data (not a test module)."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalbench.data import LOADERS, SourceParts


def load(loader: str, **kwargs) -> SourceParts:
    return LOADERS.get(loader).load(**kwargs)


def fingerprint(loader: str, **kwargs) -> dict:
    return LOADERS.get(loader).fingerprint(**kwargs)


def pixels(source) -> np.ndarray:
    """Every image of an ImageSource, decoded through ``source[i]``, stacked (N, C, H, W) uint8."""
    images = [source[i][0] for i in range(len(source))]
    assert all(im.dtype == torch.uint8 and im.ndim == 3 for im in images)
    return np.stack([im.numpy() for im in images])


# --- IDX (Fashion-MNIST) ------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the data."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(d: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        raw = idx_bytes(arr)
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (d / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        else:
            (d / name).write_bytes(raw)


def write_fashion_mnist(d: Path, *, n_train: int = 4, n_test: int = 2) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx_set(d, prefix, rng.integers(0, 256, (n, 28, 28), np.uint8), np.arange(n, dtype=np.uint8) % 10)


# --- CIFAR (python pickles) ----------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as cPickle wrote the CIFAR batches."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle like the original CIFAR files: Python 2 strings, numpy 1.x global names."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(data: np.ndarray, **labels: list[int]) -> dict:
    return {"batch_label": "training batch 1 of 5", "data": data, **labels,
            "filenames": [f"img_{i}.png" for i in range(len(data))]}


def write_cifar10(d: Path, batches: list[tuple[np.ndarray, list[int]]], *, dump=py2_pickle) -> None:
    d.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (data, labels) in zip(names, batches):
        (d / name).write_bytes(dump(cifar_batch(data, labels=labels)))


def write_small_cifar10(d: Path) -> None:
    """cifar-10-batches-py with 2 images per batch, distinct pixels and labels."""
    write_cifar10(d, [(np.full((2, 3072), b, np.uint8), [b, (b + 1) % 10]) for b in range(6)])


# --- STL-10 (binary) ------------------------------------------------------------------------------


def stl10_offset(n: int, c: int, y: int, x: int) -> int:
    """Byte offset of pixel (c, y, x) of image n in an STL-10 X file (each channel column-major)."""
    return n * 3 * 96 * 96 + c * 96 * 96 + x * 96 + y


def write_stl10(d: Path, part: str, n: int, labels: list[int], pixels: dict[tuple[int, int, int, int], int]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    x = np.zeros(n * 3 * 96 * 96, np.uint8)
    for (i, c, y, xx), v in pixels.items():
        x[stl10_offset(i, c, y, xx)] = v
    (d / f"{part}_X.bin").write_bytes(x.tobytes())
    (d / f"{part}_y.bin").write_bytes(bytes(labels))


# --- ImageFolder ----------------------------------------------------------------------------------


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_folder(root: Path, per_class: int = 3, classes: tuple[str, ...] = ("ant", "bee", "cat"),
                 size: int = 8, test: bool = True) -> None:
    """root/train/<class>/<k>.png (and root/test/...), each image a distinct flat colour."""
    for part in ("train", "test") if test else ("train",):
        for c, name in enumerate(classes):
            for k in range(per_class):
                value = (40 * c + 7 * k + (100 if part == "test" else 0)) % 256
                write_png(root / part / name / f"{k}.png", np.full((size, size, 3), value, np.uint8))
