"""FolderSource: an ImageFolder tree listed at load time, decoded one file per item."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalbench.core.errors import DatasetCorruptError
from evalbench.data import FolderSource, SubsetSource
from tests.data.dataset_writers import fingerprint, load, pixels, write_folder, write_png


def _no_hashing(path: Path) -> str:
    raise AssertionError(f"the ImageFolder fingerprint must not read file contents ({path})")


def test_labels_and_listing_need_no_decoding(tmp_path: Path) -> None:
    for c in ("cat", "dog"):
        for k in range(3):
            p = tmp_path / "train" / c / f"{k}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"not a png at all")  # every image is corrupt
    parts = load("imagefolder", root=tmp_path, image_size=8)
    assert parts.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and parts.train.labels.dtype == np.int64
    assert parts.train.classes == ["cat", "dog"]
    assert SubsetSource(parts.train, np.array([5, 0])).labels.tolist() == [1, 0]
    assert fingerprint("imagefolder", root=tmp_path, image_size=8, hash_file=_no_hashing)["files"] == 6
    with pytest.raises(DatasetCorruptError, match=str(tmp_path / "train" / "dog" / "1.png")):
        parts.train[4]


def test_truncated_image_names_file(tmp_path: Path) -> None:
    write_folder(tmp_path, per_class=2, size=32, test=False)
    bad = tmp_path / "train" / "bee" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    source = load("imagefolder", root=tmp_path, image_size=8).train
    assert pixels(SubsetSource(source, np.array([0, 1, 2]))).shape == (3, 3, 8, 8)  # the others decode
    with pytest.raises(DatasetCorruptError, match=f"{bad}: cannot be read as an image"):
        source[3]


def test_items_are_writable_uint8_chw_and_paths_roundtrip(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "c" / "x.jpeg", np.full((6, 6, 3), 200, np.uint8))
    write_png(tmp_path / "train" / "ä b" / "été 1.png", np.full((5, 7), 9, np.uint8))  # "ä" sorts after "c"
    source = load("imagefolder", root=tmp_path, image_size=4).train
    assert [source.file(i) for i in range(2)] == ["train/c/x.jpeg", "train/ä b/été 1.png"]
    assert source.path(1) == source.path(-1) == tmp_path / "train" / "ä b" / "été 1.png"
    with pytest.raises(IndexError):
        source[2]
    image, label = source[1]
    assert image.shape == (3, 4, 4) and image.is_contiguous() and label == 1 and (image == 9).all()
    image += 1  # items are the caller's own (writable) tensors
    assert (source[1][0] == 9).all()
    assert abs(int(source[0][0].float().mean()) - 200) <= 2  # JPEG is lossy


def test_pickles_for_spawned_workers(tmp_path: Path) -> None:
    write_folder(tmp_path, per_class=2)
    source = load("imagefolder", root=tmp_path, image_size=8, channels=1).test
    copy = pickle.loads(pickle.dumps(source))
    assert isinstance(copy, FolderSource) and copy.labels.tolist() == source.labels.tolist()
    assert np.array_equal(pixels(copy), pixels(source)) and pixels(copy).shape == (6, 1, 8, 8)


def test_fingerprint_is_path_independent_and_content_free(tmp_path: Path) -> None:
    write_folder(tmp_path / "a")
    fp = fingerprint("imagefolder", root=tmp_path / "a", image_size=8, hash_file=_no_hashing)
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "deeper")
    assert fingerprint("imagefolder", root=tmp_path / "b" / "deeper", image_size=8) == fp
    assert str(tmp_path) not in repr(fp) and fp["files"] == 18


def test_fingerprint_changes_with_labels_files_and_params(tmp_path: Path) -> None:
    write_folder(tmp_path)
    fp = fingerprint("imagefolder", root=tmp_path, image_size=8)
    (tmp_path / "train" / "ant" / "0.png").rename(tmp_path / "train" / "bee" / "moved.png")  # one label shuffled
    shuffled = fingerprint("imagefolder", root=tmp_path, image_size=8)
    assert shuffled != fp and shuffled["files"] == fp["files"]
    (tmp_path / "train" / "bee" / "moved.png").rename(tmp_path / "train" / "ant" / "0.png")
    assert fingerprint("imagefolder", root=tmp_path, image_size=8) == fp  # moved back
    assert fingerprint("imagefolder", root=tmp_path, image_size=16) != fp
    assert fingerprint("imagefolder", root=tmp_path, image_size=8, channels=1) != fp
    write_png(tmp_path / "test" / "cat" / "0.png", np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8))
    assert fingerprint("imagefolder", root=tmp_path, image_size=8) != fp  # content (and size) changed
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image: not data")
    write_png(tmp_path / "train" / "cat" / "new.png", np.zeros((8, 8, 3), np.uint8))
    assert fingerprint("imagefolder", root=tmp_path, image_size=8)["files"] == 19
