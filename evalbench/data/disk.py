"""Loaders for datasets users keep on disk as a few files (DESIGN.md §4): Fashion-MNIST (IDX
files), CIFAR-10/100 (python pickle batches) and STL-10 (binary files). Each is small enough to
hold in memory, so ``load`` returns :class:`ArraySource` parts; ImageFolder trees, which need
not be, stream from disk (:mod:`evalbench.data.folder`).

Nothing is downloaded: a missing dataset raises :class:`DatasetMissingError` naming the paths
looked for and how to get the data; a malformed file raises :class:`DatasetCorruptError`
naming the file. ``fingerprint`` hashes each file the loader reads (file name + content hash,
never the directory), so a copy of the same files elsewhere keeps its fingerprint.
"""
from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from evalbench.core.errors import ConfigError, DatasetCorruptError, DatasetMissingError
from evalbench.core.filehash import HashFile, sha256_file
from evalbench.data.base import LOADERS, ArraySource, Loader, SourceParts


def _locate(root: Optional[Path], subdir: str, names: Sequence[str], *, dataset: str, how: str) -> Path:
    """The directory, ``root/subdir`` or ``root`` itself, that holds every file in ``names``."""
    if root is None:
        raise DatasetMissingError(f"{dataset}: no data directory given (set `root:` in the task YAML). {how}")
    root = Path(root)
    dirs = [root / subdir, root]
    for d in dirs:
        if all((d / n).is_file() for n in names):
            return d
    looked = " and ".join(f"{d}/{{{','.join(names)}}}" for d in dirs)
    raise DatasetMissingError(f"{dataset}: data not found; looked for {looked}. {how}")


def _files_fingerprint(loader: str, paths: Sequence[Path], hash_file: HashFile, **extra: Any) -> dict[str, Any]:
    """``{"loader", "files": [[file name, sha256], ...], **extra}``: names only, never directories."""
    return {"loader": loader, "files": [[p.name, hash_file(p)] for p in paths], **extra}


# --- Fashion-MNIST: IDX files ------------------------------------------------------------------

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_HOW = (
    "Install it with `apt-get install dataset-fashion-mnist` (puts the files in "
    f"{FASHION_MNIST_ROOT}), or set `root:` in the task YAML to a directory holding the four IDX files "
    "from https://github.com/zalandoresearch/fashion-mnist (gzipped or not, or torchvision's FashionMNIST/raw/)."
)
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one the MNIST family uses
_IDX_STEMS = {"train": "train", "test": "t10k"}  # part -> file name prefix


def read_idx(path: Path) -> np.ndarray:
    """An IDX file, gzipped or not, as a uint8 array of the shape its header declares.

    Format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"): magic number = two zero bytes,
    a type code (0x08: unsigned byte) and the number of dimensions; then one big-endian uint32
    size per dimension; then the data.
    """
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # truncated or damaged gzip stream
        raise DatasetCorruptError(f"{path}: cannot be read ({e}); download or install it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetCorruptError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != _IDX_UBYTE:
        raise DatasetCorruptError(f"{path}: IDX type code 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorruptError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise DatasetCorruptError(
            f"{path}: IDX header declares shape {dims} ({int(np.prod(dims))} bytes) but the file holds "
            f"{len(raw) - header} data bytes; it is truncated or damaged, download or install it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    """``stem.gz`` or ``stem`` in ``root`` or in torchvision's ``root/FashionMNIST/raw``."""
    candidates = [d / n for d in (root, root / "FashionMNIST" / "raw") for n in (f"{stem}.gz", stem)]
    for p in candidates:
        if p.is_file():
            return p
    raise DatasetMissingError(
        f"fashion-mnist: {stem} not found; looked for {', '.join(map(str, candidates))}. {FASHION_MNIST_HOW}"
    )


def _idx_files(root: Optional[Path]) -> dict[str, tuple[Path, Path]]:
    """part -> (images file, labels file); raises DatasetMissingError naming every path tried."""
    root = FASHION_MNIST_ROOT if root is None else Path(root)
    return {part: (_find_idx(root, f"{prefix}-images-idx3-ubyte"), _find_idx(root, f"{prefix}-labels-idx1-ubyte"))
            for part, prefix in _IDX_STEMS.items()}


def _idx_part(img_path: Path, lbl_path: Path) -> ArraySource:
    images = read_idx(img_path)  # (N, H, W)
    labels = read_idx(lbl_path)  # (N,)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetCorruptError(
            f"{img_path} holds images of shape {images.shape} but {lbl_path} labels of shape {labels.shape}; "
            "expected (N, H, W) images and N labels"
        )
    return ArraySource(images[:, None], labels.astype(np.int64))  # (N, 1, H, W)


def load_fashion_mnist_idx(*, root: Optional[Path] = None) -> SourceParts:
    """Fashion-MNIST (Xiao et al. 2017) from its four IDX files: 60,000 train + 10,000 test, (N, 1, 28, 28).

    File names and format as published at https://github.com/zalandoresearch/fashion-mnist.
    ``root`` defaults to Debian's ``FASHION_MNIST_ROOT``.
    """
    files = _idx_files(root)
    return SourceParts(train=_idx_part(*files["train"]), test=_idx_part(*files["test"]))


def fingerprint_fashion_mnist_idx(*, root: Optional[Path] = None, hash_file: HashFile = sha256_file) -> dict[str, Any]:
    files = _idx_files(root)
    return _files_fingerprint("fashion-mnist-idx", [p for part in files.values() for p in part], hash_file)


LOADERS.register("fashion-mnist-idx")(Loader(load=load_fashion_mnist_idx, fingerprint=fingerprint_fashion_mnist_idx))


# --- CIFAR-10 / CIFAR-100: python pickle batches -----------------------------------------------

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR100_NAMES = ["train", "test"]


def _cifar_how(archive: str) -> str:
    return (
        f"Download {archive} from {CIFAR_URL} on a machine with internet access, extract it, "
        "and set `root:` in the task YAML to the directory it was extracted into."
    )


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals the CIFAR batches use (numpy array reconstruction); refuses the rest.

    The batches were written by Python 2's cPickle and reference ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``; numpy 2 writes ``numpy._core.multiarray`` instead.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch as (images (N, 3, 32, 32) uint8, labels (N,) int64). The file is a pickled dict with
    ``data`` uint8 (N, 3072), each row R then G then B planes of 32x32 row-major pixels, and a list
    of N labels under ``label_key`` (see ``CIFAR_URL``)."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="latin1").load()  # latin1: Python 2 str -> str, as torchvision
    except Exception as e:  # a malformed pickle can fail with almost any exception type
        raise DatasetCorruptError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get(label_key) if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DatasetCorruptError(f"{path}: expected a dict with 'data' a uint8 (N, 3072) array")
    if labels is None or len(labels) != len(data):
        raise DatasetCorruptError(f"{path}: expected {len(data)} labels under {label_key!r}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _cifar_source(paths: Sequence[Path], label_key: str) -> ArraySource:
    batches = [_read_cifar_batch(p, label_key) for p in paths]
    if len(batches) == 1:
        return ArraySource(*batches[0])
    return ArraySource(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


def _cifar10_dir(root: Optional[Path]) -> Path:
    return _locate(root, "cifar-10-batches-py", CIFAR10_NAMES, dataset="cifar10",
                   how=_cifar_how("cifar-10-python.tar.gz"))


def load_cifar10(*, root: Optional[Path]) -> SourceParts:
    """CIFAR-10 (Krizhevsky 2009), "python version" from ``CIFAR_URL``: ``cifar-10-batches-py/``
    with ``data_batch_1..5`` (50,000 train) and ``test_batch`` (10,000), (N, 3, 32, 32)."""
    d = _cifar10_dir(root)
    return SourceParts(train=_cifar_source([d / n for n in CIFAR10_NAMES[:-1]], "labels"),
                       test=_cifar_source([d / "test_batch"], "labels"))


def fingerprint_cifar10(*, root: Optional[Path], hash_file: HashFile = sha256_file) -> dict[str, Any]:
    d = _cifar10_dir(root)
    return _files_fingerprint("cifar10", [d / n for n in CIFAR10_NAMES], hash_file)


LOADERS.register("cifar10")(Loader(load=load_cifar10, fingerprint=fingerprint_cifar10))


def _cifar100_dir(root: Optional[Path], label_type: str) -> Path:
    if label_type not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: params.label_type must be 'fine' or 'coarse', got {label_type!r}")
    return _locate(root, "cifar-100-python", CIFAR100_NAMES, dataset="cifar100",
                   how=_cifar_how("cifar-100-python.tar.gz"))


def load_cifar100(*, root: Optional[Path], label_type: str = "fine") -> SourceParts:
    """CIFAR-100 (Krizhevsky 2009), "python version" from ``CIFAR_URL``: ``cifar-100-python/`` with
    ``train`` (50,000) and ``test`` (10,000), (N, 3, 32, 32); ``label_type`` fine (100) or coarse (20)."""
    d = _cifar100_dir(root, label_type)
    key = f"{label_type}_labels"
    return SourceParts(train=_cifar_source([d / "train"], key), test=_cifar_source([d / "test"], key))


def fingerprint_cifar100(*, root: Optional[Path], hash_file: HashFile = sha256_file,
                         label_type: str = "fine") -> dict[str, Any]:
    d = _cifar100_dir(root, label_type)
    return _files_fingerprint("cifar100", [d / n for n in CIFAR100_NAMES], hash_file, label_type=label_type)


LOADERS.register("cifar100")(Loader(load=load_cifar100, fingerprint=fingerprint_cifar100))


# --- STL-10: binary files ----------------------------------------------------------------------

STL10_URL = "https://cs.stanford.edu/~acoates/stl10/"
STL10_NAMES = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
_STL10_IMAGE_BYTES = 3 * 96 * 96


def _read_stl10_part(d: Path, part: str) -> ArraySource:
    """``{part}_X.bin``: uint8 images, each 3 channel planes stored column-major (``STL10_URL``);
    ``{part}_y.bin``: one uint8 label 1..10 per image."""
    x = np.fromfile(d / f"{part}_X.bin", dtype=np.uint8)
    y = np.fromfile(d / f"{part}_y.bin", dtype=np.uint8)
    if x.size % _STL10_IMAGE_BYTES or x.size // _STL10_IMAGE_BYTES != y.size:
        raise DatasetCorruptError(
            f"{d / f'{part}_X.bin'} holds {x.size} bytes for {y.size} labels in {d / f'{part}_y.bin'}; "
            f"expected {_STL10_IMAGE_BYTES} bytes per image, so one of them is truncated or damaged"
        )
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DatasetCorruptError(f"{d / f'{part}_y.bin'}: labels must be 1..10, found {y.min()}..{y.max()}")
    images = x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored (N, C, W, H) -> (N, C, H, W)
    return ArraySource(np.ascontiguousarray(images), y.astype(np.int64) - 1)  # labels 1..10 -> 0..9


def _stl10_dir(root: Optional[Path]) -> Path:
    how = (f"Download stl10_binary.tar.gz from {STL10_URL} on a machine with internet access, extract it, "
           "and set `root:` in the task YAML to the directory it was extracted into.")
    return _locate(root, "stl10_binary", STL10_NAMES, dataset="stl10", how=how)


def load_stl10(*, root: Optional[Path]) -> SourceParts:
    """STL-10 (Coates et al. 2011), binary version from ``STL10_URL``: ``stl10_binary/`` with
    ``train_X.bin``/``train_y.bin`` (5,000) and ``test_X.bin``/``test_y.bin`` (8,000), (N, 3, 96, 96).
    The unlabeled split is not read."""
    d = _stl10_dir(root)
    return SourceParts(train=_read_stl10_part(d, "train"), test=_read_stl10_part(d, "test"))


def fingerprint_stl10(*, root: Optional[Path], hash_file: HashFile = sha256_file) -> dict[str, Any]:
    d = _stl10_dir(root)
    return _files_fingerprint("stl10", [d / n for n in STL10_NAMES], hash_file)


LOADERS.register("stl10")(Loader(load=load_stl10, fingerprint=fingerprint_stl10))
