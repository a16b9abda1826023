"""Split index files: making, reading, writing and applying them; the committed files still apply."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from evalbench.core.errors import ConfigError
from evalbench.data import ArraySource, SourceParts, apply_split, make_split, read_split_file, write_split_file
from tests.data.dataset_writers import load, pixels

TASKS = Path(__file__).resolve().parents[2] / "tasks"
HINT = "`evalbench splits tasks/x.yaml`"


def _parts(n: int, *, test: int = 0) -> SourceParts:
    """n train images whose pixels encode their index (image i is all i), labels i % 3."""
    def source(k: int, offset: int) -> ArraySource:
        return ArraySource(np.broadcast_to((np.arange(k) + offset).astype(np.uint8)[:, None, None, None],
                                           (k, 1, 2, 2)).copy(), np.arange(k) % 3)
    return SourceParts(train=source(n, 0), test=source(test, 200) if test else None)


def _apply(parts: SourceParts, split: dict):
    return apply_split(parts, split, task="x", split_file=Path("/splits/x.json"), remake_hint=HINT)


def test_make_split__seeded_disjoint_and_sized() -> None:
    split = make_split(100, val_fraction=0.1, test_fraction=0.25, seed=3)
    assert split == make_split(100, val_fraction=0.1, test_fraction=0.25, seed=3)
    assert split["train_size"] == 100 and split["seed"] == 3
    assert len(split["val"]) == 10 and len(split["test"]) == 25 and not set(split["val"]) & set(split["test"])
    assert split["val"] == sorted(split["val"])
    assert split != make_split(100, val_fraction=0.1, test_fraction=0.25, seed=4)
    assert "test" not in make_split(100, val_fraction=0.1, test_fraction=0.0, seed=0)


def test_apply_split__partitions_train_without_decoding() -> None:
    parts = _parts(20)
    sets = _apply(parts, {"train_size": 20, "val": [1, 5], "test": [0, 7, 19]})
    assert pixels(sets.val)[:, 0, 0, 0].tolist() == [1, 5] and sets.val.labels.tolist() == [1, 2]
    assert pixels(sets.test)[:, 0, 0, 0].tolist() == [0, 7, 19] and sets.test.labels.tolist() == [0, 1, 1]
    train_ids = pixels(sets.train)[:, 0, 0, 0].tolist()
    assert train_ids == sorted(set(range(20)) - {0, 1, 5, 7, 19})
    assert sets.train.labels.tolist() == [i % 3 for i in train_ids]


def test_apply_split__own_test_set_is_used() -> None:
    parts = _parts(10, test=4)
    sets = _apply(parts, {"train_size": 10, "val": [2]})
    assert sets.test is parts.test and len(sets.train) == 9 and len(sets.val) == 1


def test_apply_split__size_mismatch_says_how_to_fix() -> None:
    with pytest.raises(ConfigError, match=r"made for a train part of 12 images, but the data has 10.*" + HINT):
        _apply(_parts(10), {"train_size": 12, "val": [1], "test": [2]})


def test_apply_split__test_indices_iff_no_test_set() -> None:
    with pytest.raises(ConfigError, match="holds test indices but the dataset has its own test set"):
        _apply(_parts(10, test=2), {"train_size": 10, "val": [1], "test": [2]})
    with pytest.raises(ConfigError, match="no test indices and the dataset has no test set; set splits.test_fraction"):
        _apply(_parts(10), {"train_size": 10, "val": [1]})


def test_apply_split__bad_indices_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"'val' index 10 is outside the train part's 10 images"):
        _apply(_parts(10), {"train_size": 10, "val": [1, 10], "test": [2]})
    with pytest.raises(ConfigError, match="val and test indices overlap"):
        _apply(_parts(10), {"train_size": 10, "val": [1, 2], "test": [2]})


def test_split_files__write_read_roundtrip_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "x.json"
    split = {"task": "x", **make_split(50, val_fraction=0.2, test_fraction=0.2, seed=0)}
    write_split_file(path, split)
    read, sha = read_split_file(path)
    assert read == split and sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_text().count("\n") == 1 and " " not in path.read_text()  # one compact line


def test_split_files__missing_or_malformed_say_how_to_make(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope.json'} does not exist; create it once with {HINT}"):
        read_split_file(tmp_path / "nope.json", how_to_make=HINT)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=f"bad.json is not valid JSON.*{HINT}"):
        read_split_file(tmp_path / "bad.json", how_to_make=HINT)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="'val' index list"):
        read_split_file(tmp_path / "list.json", how_to_make=HINT)


def _task(name: str) -> dict:
    return yaml.safe_load((TASKS / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", ["digits", "mnist5k", "fashion-mnist"])
def test_committed_split_files__are_what_make_split_gives_and_rewrite_identically(name: str, tmp_path: Path) -> None:
    task, path = _task(name), TASKS / "splits" / f"{name}.json"
    split, sha = read_split_file(path)
    s = task["splits"]
    assert split == {"task": name, **make_split(split["train_size"], val_fraction=s.get("val_fraction", 0.1),
                                                test_fraction=s.get("test_fraction", 0.0), seed=s.get("seed", 0))}
    write_split_file(tmp_path / "again.json", split)
    assert read_split_file(tmp_path / "again.json")[1] == sha


@pytest.mark.parametrize("name", ["digits", "mnist5k", "fashion-mnist"])
def test_committed_split_files__apply_to_the_data(name: str) -> None:
    task = _task(name)
    if name == "fashion-mnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    parts = load(task["loader"], root=None, **(task.get("params") or {}))
    path = TASKS / task["splits"]["file"]
    split, _ = read_split_file(path)
    sets = apply_split(parts, split, task=name, split_file=path, remake_hint=HINT)
    n = len(parts.train)
    assert len(sets.train) + len(sets.val) + (0 if parts.test is not None else len(sets.test)) == n
    assert len(sets.val) == len(split["val"]) and sets.val.labels.tolist() == parts.train.labels[split["val"]].tolist()
    for s in (sets.train, sets.val, sets.test):
        assert len(np.unique(s.labels)) == task["num_classes"]  # every class in every set
        image, label = s[len(s) - 1]  # items agree with the labels known without decoding
        assert label == s.labels[-1] and tuple(image.shape) == parts.train.images.shape[1:]
