"""On-disk loaders (evalbench.data.disk): tiny files written in each real format."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evalbench.data import LOADERS
from evalbench.errors import ConfigError, DatasetCorruptError, DatasetMissingError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# --- writers for each format --------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the data."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(d: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        raw = idx_bytes(arr)
        name = f"{prefix}-{kind}-ubyte"
        if gz:
            (d / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (d / name).write_bytes(raw)


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
    import io

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


def stl10_offset(n: int, c: int, y: int, x: int) -> int:
    """Byte offset of pixel (c, y, x) of image n in an STL-10 X file (each channel column-major)."""
    return n * 3 * 96 * 96 + c * 96 * 96 + x * 96 + y


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --- Fashion-MNIST (IDX) --------------------------------------------------------------------------


def test_fashion_mnist_idx__roundtrips_pixel_layout(tmp_path: Path) -> None:
    train = np.zeros((3, 28, 28), np.uint8)
    train[1, 5, 20] = 200  # image 1, row 5, column 20
    write_idx_set(tmp_path, "train", train, np.array([4, 7, 9], np.uint8))
    write_idx_set(tmp_path, "t10k", np.full((2, 28, 28), 9, np.uint8), np.array([0, 1], np.uint8))
    parts = LOADERS.get("fashion-mnist-idx")(root=tmp_path)
    assert parts.train.images.shape == (3, 1, 28, 28) and parts.test.images.shape == (2, 1, 28, 28)
    assert parts.train.images[1, 0, 5, 20] == 200 and parts.train.images.sum() == 200
    assert parts.train.labels.tolist() == [4, 7, 9] and parts.train.labels.dtype == np.int64
    assert parts.test.labels.tolist() == [0, 1] and (parts.test.images == 9).all()


def test_fashion_mnist_idx__reads_uncompressed_torchvision_raw_layout(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)  # values wrap at 256
    write_idx_set(raw, "train", images, np.array([1, 2], np.uint8), gz=False)
    write_idx_set(raw, "t10k", np.zeros((1, 28, 28), np.uint8), np.array([3], np.uint8), gz=False)
    parts = LOADERS.get("fashion-mnist-idx")(root=tmp_path)
    assert parts.train.images[0, 0, 0, :3].tolist() == [0, 1, 2] and parts.train.images[0, 0, 1, 0] == 28
    assert parts.test.labels.tolist() == [3]


@pytest.mark.parametrize("damage", ["truncated-data", "truncated-gzip"])
def test_fashion_mnist_idx__truncated_file_fails_clearly(tmp_path: Path, damage: str) -> None:
    write_idx_set(tmp_path, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    write_idx_set(tmp_path, "t10k", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8))
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    raw = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    bad.write_bytes(gzip.compress(raw[:-100]) if damage == "truncated-data" else gzip.compress(raw)[:-20])
    with pytest.raises(DatasetCorruptError, match=str(bad)):
        LOADERS.get("fashion-mnist-idx")(root=tmp_path)


def test_fashion_mnist_idx__missing_root_names_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist") as e:
        LOADERS.get("fashion-mnist-idx")(root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "train-images-idx3-ubyte.gz") in str(e.value)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_idx__reads_real_debian_files() -> None:
    parts = LOADERS.get("fashion-mnist-idx")(root=None)
    assert parts.train.images.shape == (60000, 1, 28, 28) and parts.test.images.shape == (10000, 1, 28, 28)
    for p in (parts.train, parts.test):
        assert p.labels.min() == 0 and p.labels.max() == 9
        assert np.bincount(p.labels).tolist() == [len(p) // 10] * 10  # balanced classes


# --- CIFAR-10 / CIFAR-100 (pickle batches) ---------------------------------------------------------


def test_cifar10__roundtrips_pixel_layout(tmp_path: Path) -> None:
    batches = []
    for b in range(6):
        data = np.full((2, 3072), b, np.uint8)
        batches.append((data, [b, (b + 1) % 10]))
    batches[2][0][1, 1 * 1024 + 7 * 32 + 30] = 250  # train image 5 (batch 3, row 1): channel G, y=7, x=30
    write_cifar10(tmp_path / "cifar-10-batches-py", batches)
    parts = LOADERS.get("cifar10")(root=tmp_path)
    assert parts.train.images.shape == (10, 3, 32, 32) and parts.test.images.shape == (2, 3, 32, 32)
    assert parts.train.images[5, 1, 7, 30] == 250
    assert parts.train.images[5, 0, 7, 30] == 2 and parts.train.images[5, 1, 30, 7] == 2
    assert parts.train.labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert parts.test.labels.tolist() == [5, 6] and (parts.test.images == 5).all()


def test_cifar10__accepts_batches_dir_as_root_and_numpy2_pickles(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    batch = (np.arange(3072, dtype=np.uint16).astype(np.uint8)[None], [3])
    write_cifar10(d, [batch] * 6, dump=lambda obj: pickle.dumps(obj, protocol=4))
    parts = LOADERS.get("cifar10")(root=d)
    assert parts.train.images[0, 2, 0, :3].tolist() == [0, 1, 2]  # 2048 % 256 == 0: B plane starts at 0
    assert len(parts.train) == 5 and parts.train.labels.tolist() == [3] * 5


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10__refuses_forbidden_global_without_executing(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d, [(np.zeros((1, 3072), np.uint8), [0])] * 6)
    marker = tmp_path / "pwned"
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": _RunsShell(marker)}, protocol=2))
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1.*forbidden global .*system"):
        LOADERS.get("cifar10")(root=tmp_path)
    assert not marker.exists()


def test_cifar10__missing_root_names_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="cifar-10-python.tar.gz") as e:
        LOADERS.get("cifar10")(root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value) and "test_batch" in str(e.value)


def test_cifar10__truncated_batch_names_file(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d, [(np.zeros((4, 3072), np.uint8), [0, 1, 2, 3])] * 6)
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:5000])
    with pytest.raises(DatasetCorruptError, match="test_batch"):
        LOADERS.get("cifar10")(root=d)


@pytest.mark.parametrize("label_type, expected", [("fine", [42, 99]), ("coarse", [3, 19])])
def test_cifar100__reads_fine_or_coarse_labels(tmp_path: Path, label_type: str, expected: list[int]) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.zeros((2, 3072), np.uint8)
    data[0, 2 * 1024 + 31 * 32 + 0] = 77  # image 0: channel B, y=31, x=0
    (d / "train").write_bytes(py2_pickle(cifar_batch(data, fine_labels=[42, 99], coarse_labels=[3, 19])))
    (d / "test").write_bytes(py2_pickle(cifar_batch(data[:1], fine_labels=[5], coarse_labels=[1])))
    parts = LOADERS.get("cifar100")(root=tmp_path, label_type=label_type)
    assert parts.train.images[0, 2, 31, 0] == 77 and parts.train.images.sum() == 77
    assert parts.train.labels.tolist() == expected and len(parts.test) == 1


def test_cifar100__rejects_unknown_label_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_type"):
        LOADERS.get("cifar100")(root=tmp_path, label_type="superclass")


# --- STL-10 (binary) --------------------------------------------------------------------------------


def write_stl10(d: Path, part: str, n: int, labels: list[int], pixels: dict[tuple[int, int, int, int], int]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    x = np.zeros(n * 3 * 96 * 96, np.uint8)
    for (i, c, y, xx), v in pixels.items():
        x[stl10_offset(i, c, y, xx)] = v
    (d / f"{part}_X.bin").write_bytes(x.tobytes())
    (d / f"{part}_y.bin").write_bytes(bytes(labels))


def test_stl10__roundtrips_column_major_layout(tmp_path: Path) -> None:
    d = tmp_path / "stl10_binary"
    write_stl10(d, "train", 2, [1, 10], {(1, 0, 3, 90): 123, (0, 2, 95, 0): 45})
    write_stl10(d, "test", 1, [5], {(0, 1, 10, 20): 9})
    parts = LOADERS.get("stl10")(root=tmp_path)
    assert parts.train.images.shape == (2, 3, 96, 96) and parts.test.images.shape == (1, 3, 96, 96)
    assert parts.train.images[1, 0, 3, 90] == 123 and parts.train.images[0, 2, 95, 0] == 45
    assert parts.train.images.sum() == 123 + 45 and parts.test.images[0, 1, 10, 20] == 9
    assert parts.train.labels.tolist() == [0, 9] and parts.test.labels.tolist() == [4]
    assert parts.train.images.flags.c_contiguous


def test_stl10__truncated_and_missing_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="stl10_binary") as e:
        LOADERS.get("stl10")(root=tmp_path)
    assert "https://cs.stanford.edu/~acoates/stl10/" in str(e.value)
    write_stl10(tmp_path, "train", 2, [1, 2], {})
    write_stl10(tmp_path, "test", 1, [1], {})
    x = tmp_path / "train_X.bin"
    x.write_bytes(x.read_bytes()[:-1])
    with pytest.raises(DatasetCorruptError, match="train_X.bin"):
        LOADERS.get("stl10")(root=tmp_path)


# --- ImageFolder ----------------------------------------------------------------------------------


def test_imagefolder__roundtrips_pixels_and_class_order(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2, 6] = (10, 20, 30)  # y=2, x=6
    write_png(tmp_path / "train" / "zebra" / "a.png", rgb)
    write_png(tmp_path / "train" / "ant" / "b.png", np.full((8, 8, 3), 1, np.uint8))
    write_png(tmp_path / "train" / "ant" / "a.png", np.full((8, 8, 3), 2, np.uint8))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "test" / "zebra" / "c.png", np.full((8, 8, 3), 3, np.uint8))
    parts = LOADERS.get("imagefolder")(root=tmp_path, image_size=8)
    assert parts.train.images.shape == (3, 3, 8, 8) and parts.train.labels.tolist() == [0, 0, 1]
    assert parts.train.images[0, 0, 0, 0] == 2 and parts.train.images[1, 0, 0, 0] == 1  # ant/a, ant/b
    assert parts.train.images[2, :, 2, 6].tolist() == [10, 20, 30] and parts.train.images[2].sum() == 60
    assert parts.test.labels.tolist() == [1] and (parts.test.images == 3).all()  # zebra keeps train's index


def test_imagefolder__resizes_and_converts_to_gray_without_test_dir(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "a" / "x.png", np.full((20, 12, 3), 200, np.uint8))
    write_png(tmp_path / "train" / "b" / "y.png", np.full((5, 5), 50, np.uint8))
    parts = LOADERS.get("imagefolder")(root=tmp_path, image_size=16, channels=1)
    assert parts.train.images.shape == (2, 1, 16, 16) and parts.test is None
    assert (parts.train.images[0] == 200).all() and (parts.train.images[1] == 50).all()


def test_imagefolder__test_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "a" / "x.png", np.zeros((4, 4, 3), np.uint8))
    write_png(tmp_path / "test" / "b" / "y.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="lacks: b"):
        LOADERS.get("imagefolder")(root=tmp_path, image_size=4)


def test_imagefolder__missing_root_and_bad_params(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match=str(tmp_path / "train")):
        LOADERS.get("imagefolder")(root=tmp_path, image_size=4)
    with pytest.raises(ConfigError, match="image_size"):
        LOADERS.get("imagefolder")(root=tmp_path)
    with pytest.raises(ConfigError, match="channels"):
        LOADERS.get("imagefolder")(root=tmp_path, image_size=4, channels=4)
