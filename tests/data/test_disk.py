"""On-disk loaders (evalbench.data.disk, evalbench.data.folder): tiny files written in each real format.

Each loader returns image sources whose labels are known without decoding and whose items
are ``(uint8 (C, H, W) tensor, label)``; a fingerprint that names files, never directories.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalbench.core.errors import ConfigError, DatasetCorruptError, DatasetMissingError
from tests.data.dataset_writers import (cifar_batch, fingerprint, idx_bytes, load, pixels, py2_pickle, write_cifar10,
                                        write_fashion_mnist, write_idx_set, write_png, write_small_cifar10,
                                        write_stl10)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# --- Fashion-MNIST (IDX) --------------------------------------------------------------------------


def test_fashion_mnist_idx__roundtrips_pixel_layout(tmp_path: Path) -> None:
    train = np.zeros((3, 28, 28), np.uint8)
    train[1, 5, 20] = 200  # image 1, row 5, column 20
    write_idx_set(tmp_path, "train", train, np.array([4, 7, 9], np.uint8))
    write_idx_set(tmp_path, "t10k", np.full((2, 28, 28), 9, np.uint8), np.array([0, 1], np.uint8))
    parts = load("fashion-mnist-idx", root=tmp_path)
    x_train, x_test = pixels(parts.train), pixels(parts.test)
    assert x_train.shape == (3, 1, 28, 28) and x_test.shape == (2, 1, 28, 28)
    assert x_train[1, 0, 5, 20] == 200 and x_train.sum() == 200
    assert parts.train.labels.tolist() == [4, 7, 9] and parts.train.labels.dtype == np.int64
    assert [parts.train[i][1] for i in range(3)] == [4, 7, 9]
    assert parts.test.labels.tolist() == [0, 1] and (x_test == 9).all()


def test_fashion_mnist_idx__reads_uncompressed_torchvision_raw_layout(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)  # values wrap at 256
    write_idx_set(raw, "train", images, np.array([1, 2], np.uint8), gz=False)
    write_idx_set(raw, "t10k", np.zeros((1, 28, 28), np.uint8), np.array([3], np.uint8), gz=False)
    parts = load("fashion-mnist-idx", root=tmp_path)
    x = pixels(parts.train)
    assert x[0, 0, 0, :3].tolist() == [0, 1, 2] and x[0, 0, 1, 0] == 28
    assert parts.test.labels.tolist() == [3]


@pytest.mark.parametrize("damage", ["truncated-data", "truncated-gzip"])
def test_fashion_mnist_idx__truncated_file_fails_clearly(tmp_path: Path, damage: str) -> None:
    write_idx_set(tmp_path, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    write_idx_set(tmp_path, "t10k", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8))
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    raw = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    bad.write_bytes(gzip.compress(raw[:-100]) if damage == "truncated-data" else gzip.compress(raw)[:-20])
    with pytest.raises(DatasetCorruptError, match=str(bad)):
        load("fashion-mnist-idx", root=tmp_path)


def test_fashion_mnist_idx__missing_root_names_paths(tmp_path: Path) -> None:
    for call in (load, fingerprint):  # the fingerprint fails as loading does
        with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist") as e:
            call("fashion-mnist-idx", root=tmp_path / "nowhere")
        assert str(tmp_path / "nowhere" / "train-images-idx3-ubyte.gz") in str(e.value)


def test_fashion_mnist_idx__fingerprint_follows_bytes_not_paths(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path / "a")
    fp = fingerprint("fashion-mnist-idx", root=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert fingerprint("fashion-mnist-idx", root=tmp_path / "b") == fp  # same data elsewhere
    assert str(tmp_path) not in repr(fp)
    f = tmp_path / "b" / "train-labels-idx1-ubyte.gz"  # one label changed
    f.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 2, 4], np.uint8)), mtime=0))
    assert fingerprint("fashion-mnist-idx", root=tmp_path / "b") != fp


def test_fashion_mnist_idx__fingerprint_uses_the_given_file_hasher(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path)
    seen: list[str] = []
    fp = fingerprint("fashion-mnist-idx", root=tmp_path, hash_file=lambda p: seen.append(p.name) or "h")
    assert sorted(seen) == sorted(f.name for f in tmp_path.iterdir())  # each of the four files, once
    assert fp["files"][0] == ["train-images-idx3-ubyte.gz", "h"]


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_idx__reads_real_debian_files() -> None:
    parts = load("fashion-mnist-idx", root=None)
    assert len(parts.train) == 60000 and len(parts.test) == 10000
    assert parts.train[0][0].shape == (1, 28, 28) and parts.test[9999][0].shape == (1, 28, 28)
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
    parts = load("cifar10", root=tmp_path)
    x_train, x_test = pixels(parts.train), pixels(parts.test)
    assert x_train.shape == (10, 3, 32, 32) and x_test.shape == (2, 3, 32, 32)
    assert x_train[5, 1, 7, 30] == 250
    assert x_train[5, 0, 7, 30] == 2 and x_train[5, 1, 30, 7] == 2
    assert parts.train.labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert parts.test.labels.tolist() == [5, 6] and (x_test == 5).all()


def test_cifar10__accepts_batches_dir_as_root_and_numpy2_pickles(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    batch = (np.arange(3072, dtype=np.uint16).astype(np.uint8)[None], [3])
    write_cifar10(d, [batch] * 6, dump=lambda obj: pickle.dumps(obj, protocol=4))
    parts = load("cifar10", root=d)
    assert pixels(parts.train)[0, 2, 0, :3].tolist() == [0, 1, 2]  # 2048 % 256 == 0: B plane starts at 0
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
        load("cifar10", root=tmp_path)
    assert not marker.exists()


def test_cifar10__missing_root_names_paths(tmp_path: Path) -> None:
    for call in (load, fingerprint):
        with pytest.raises(DatasetMissingError, match="cifar-10-python.tar.gz") as e:
            call("cifar10", root=tmp_path)
        assert str(tmp_path / "cifar-10-batches-py") in str(e.value) and "test_batch" in str(e.value)


def test_cifar10__truncated_batch_names_file(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    write_cifar10(d, [(np.zeros((4, 3072), np.uint8), [0, 1, 2, 3])] * 6)
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:5000])
    with pytest.raises(DatasetCorruptError, match="test_batch"):
        load("cifar10", root=d)


def test_cifar10__fingerprint_follows_bytes_not_paths(tmp_path: Path) -> None:
    write_small_cifar10(tmp_path / "a" / "cifar-10-batches-py")
    fp = fingerprint("cifar10", root=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere")
    assert fingerprint("cifar10", root=tmp_path / "elsewhere") == fp
    assert fingerprint("cifar10", root=tmp_path / "elsewhere" / "cifar-10-batches-py") == fp  # root = the dir
    assert str(tmp_path) not in repr(fp)
    batch = tmp_path / "elsewhere" / "cifar-10-batches-py" / "data_batch_3"
    raw = bytearray(batch.read_bytes())
    raw[-200] ^= 1  # one pixel byte flipped
    batch.write_bytes(bytes(raw))
    assert fingerprint("cifar10", root=tmp_path / "elsewhere") != fp


@pytest.mark.parametrize("label_type, expected", [("fine", [42, 99]), ("coarse", [3, 19])])
def test_cifar100__reads_fine_or_coarse_labels(tmp_path: Path, label_type: str, expected: list[int]) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.zeros((2, 3072), np.uint8)
    data[0, 2 * 1024 + 31 * 32 + 0] = 77  # image 0: channel B, y=31, x=0
    (d / "train").write_bytes(py2_pickle(cifar_batch(data, fine_labels=[42, 99], coarse_labels=[3, 19])))
    (d / "test").write_bytes(py2_pickle(cifar_batch(data[:1], fine_labels=[5], coarse_labels=[1])))
    parts = load("cifar100", root=tmp_path, label_type=label_type)
    x = pixels(parts.train)
    assert x[0, 2, 31, 0] == 77 and x.sum() == 77
    assert parts.train.labels.tolist() == expected and len(parts.test) == 1
    fine, coarse = (fingerprint("cifar100", root=tmp_path, label_type=t) for t in ("fine", "coarse"))
    assert fine != coarse and fine["files"] == coarse["files"]  # same files, other labels


def test_cifar100__rejects_unknown_label_type(tmp_path: Path) -> None:
    for call in (load, fingerprint):
        with pytest.raises(ConfigError, match="label_type"):
            call("cifar100", root=tmp_path, label_type="superclass")


# --- STL-10 (binary) --------------------------------------------------------------------------------


def test_stl10__roundtrips_column_major_layout(tmp_path: Path) -> None:
    d = tmp_path / "stl10_binary"
    write_stl10(d, "train", 2, [1, 10], {(1, 0, 3, 90): 123, (0, 2, 95, 0): 45})
    write_stl10(d, "test", 1, [5], {(0, 1, 10, 20): 9})
    parts = load("stl10", root=tmp_path)
    x_train, x_test = pixels(parts.train), pixels(parts.test)
    assert x_train.shape == (2, 3, 96, 96) and x_test.shape == (1, 3, 96, 96)
    assert x_train[1, 0, 3, 90] == 123 and x_train[0, 2, 95, 0] == 45
    assert x_train.sum() == 123 + 45 and x_test[0, 1, 10, 20] == 9
    assert parts.train.labels.tolist() == [0, 9] and parts.test.labels.tolist() == [4]
    assert parts.train.images.flags.c_contiguous


def test_stl10__truncated_and_missing_files_fail_clearly(tmp_path: Path) -> None:
    for call in (load, fingerprint):
        with pytest.raises(DatasetMissingError, match="stl10_binary") as e:
            call("stl10", root=tmp_path)
        assert "https://cs.stanford.edu/~acoates/stl10/" in str(e.value)
    write_stl10(tmp_path, "train", 2, [1, 2], {})
    write_stl10(tmp_path, "test", 1, [1], {})
    x = tmp_path / "train_X.bin"
    x.write_bytes(x.read_bytes()[:-1])
    with pytest.raises(DatasetCorruptError, match="train_X.bin"):
        load("stl10", root=tmp_path)


def test_stl10__fingerprint_follows_bytes_not_paths(tmp_path: Path) -> None:
    for d in (tmp_path / "a" / "stl10_binary", tmp_path / "b"):  # nested, and the dir itself as root
        write_stl10(d, "train", 2, [1, 2], {(0, 0, 0, 0): 5})
        write_stl10(d, "test", 1, [3], {})
    fp = fingerprint("stl10", root=tmp_path / "a")
    assert fingerprint("stl10", root=tmp_path / "b") == fp
    (tmp_path / "b" / "train_y.bin").write_bytes(bytes([2, 1]))  # labels swapped
    assert fingerprint("stl10", root=tmp_path / "b") != fp


# --- ImageFolder ----------------------------------------------------------------------------------


def test_imagefolder__roundtrips_pixels_and_class_order(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2, 6] = (10, 20, 30)  # y=2, x=6
    write_png(tmp_path / "train" / "zebra" / "a.png", rgb)
    write_png(tmp_path / "train" / "ant" / "b.png", np.full((8, 8, 3), 1, np.uint8))
    write_png(tmp_path / "train" / "ant" / "a.png", np.full((8, 8, 3), 2, np.uint8))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "test" / "zebra" / "c.png", np.full((8, 8, 3), 3, np.uint8))
    parts = load("imagefolder", root=tmp_path, image_size=8)
    x_train, x_test = pixels(parts.train), pixels(parts.test)
    assert x_train.shape == (3, 3, 8, 8) and parts.train.labels.tolist() == [0, 0, 1]
    assert x_train[0, 0, 0, 0] == 2 and x_train[1, 0, 0, 0] == 1  # ant/a, ant/b
    assert x_train[2, :, 2, 6].tolist() == [10, 20, 30] and x_train[2].sum() == 60
    assert parts.test.labels.tolist() == [1] and (x_test == 3).all()  # zebra keeps train's index


def test_imagefolder__resizes_and_converts_to_gray_without_test_dir(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "a" / "x.png", np.full((20, 12, 3), 200, np.uint8))
    write_png(tmp_path / "train" / "b" / "y.png", np.full((5, 5), 50, np.uint8))
    parts = load("imagefolder", root=tmp_path, image_size=16, channels=1)
    x = pixels(parts.train)
    assert x.shape == (2, 1, 16, 16) and parts.test is None
    assert (x[0] == 200).all() and (x[1] == 50).all()


def test_imagefolder__test_class_missing_from_train_is_an_error(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "a" / "x.png", np.zeros((4, 4, 3), np.uint8))
    write_png(tmp_path / "test" / "b" / "y.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="lacks: b"):
        load("imagefolder", root=tmp_path, image_size=4)


def test_imagefolder__missing_root_and_bad_params(tmp_path: Path) -> None:
    for call in (load, fingerprint):
        with pytest.raises(DatasetMissingError, match=str(tmp_path / "train")):
            call("imagefolder", root=tmp_path, image_size=4)
        with pytest.raises(ConfigError, match="image_size"):
            call("imagefolder", root=tmp_path)
        with pytest.raises(ConfigError, match="channels"):
            call("imagefolder", root=tmp_path, image_size=4, channels=4)
