"""Split index files (DESIGN.md §4): which items of a dataset's train part are held out for
validation (and for test, when the dataset has no test set of its own).

A split file is JSON, ``{"task", "seed", "train_size", "val": [...], "test": [...]}`` with
sorted indices into the train part; ``test`` is present iff the dataset has no test part.
The files are committed beside the tasks, so every machine evaluates the same examples; they
are made once by :func:`make_split` (uniform, seeded) and never regenerated silently.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalbench.core.atomic import write_text
from evalbench.core.errors import ConfigError
from evalbench.data.base import ImageSource, SourceParts, SubsetSource


@dataclass(frozen=True)
class SplitSets:
    """A task's three image sets after its split file."""

    train: ImageSource
    val: ImageSource
    test: ImageSource


def make_split(train_size: int, *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, Any]:
    """Uniformly random, seeded, disjoint val (and test) index sets out of ``range(train_size)``.

    One permutation from ``np.random.default_rng(seed)``: its first round(test_fraction * n)
    items are test, the next round(val_fraction * n) are val; each list is sorted. (This exact
    algorithm made the committed files under tasks/splits/; changing it would not change them,
    but would make `evalbench splits` disagree with them.)
    """
    perm = np.random.default_rng(seed).permutation(train_size)
    n_test = int(round(test_fraction * train_size))
    n_val = int(round(val_fraction * train_size))
    split: dict[str, Any] = {"seed": seed, "train_size": train_size}
    split["val"] = sorted(int(i) for i in perm[n_test : n_test + n_val])
    if n_test:
        split["test"] = sorted(int(i) for i in perm[:n_test])
    return split


def write_split_file(path: Path, split: dict[str, Any]) -> Path:
    """Write ``split`` as one compact JSON line (atomically); the caller adds ``"task"``."""
    return write_text(Path(path), json.dumps(split, separators=(",", ":")) + "\n")


def read_split_file(path: Path, *, how_to_make: str = "`evalbench splits TASK`") -> tuple[dict[str, Any], str]:
    """The split dict and the sha256 of the file's bytes (part of the task's identity).

    ``how_to_make`` (e.g. "`evalbench splits tasks/x.yaml`") goes verbatim into the error
    raised when the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"split index file {path} does not exist; create it once with {how_to_make} and keep it with the task"
        )
    raw = path.read_bytes()
    try:
        split = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"split index file {path} is not valid JSON ({e}); remake it with {how_to_make}") from None
    if not isinstance(split, dict) or not isinstance(split.get("val"), list):
        raise ConfigError(f"split index file {path} must be a JSON object with a 'val' index list; "
                          f"remake it with {how_to_make}")
    return split, hashlib.sha256(raw).hexdigest()


def _indices(split: dict[str, Any], key: str, n: int, where: str) -> np.ndarray:
    """``split[key]`` as int64 indices, each in range(n)."""
    try:
        idx = np.asarray(split.get(key, []), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key!r} must be a list of integer indices") from None
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ConfigError(f"{where}: {key!r} index {int(bad[0])} is outside the train part's {n} images")
    return idx


def apply_split(parts: SourceParts, split: dict[str, Any], *, task: str, split_file: Path,
                remake_hint: str) -> SplitSets:
    """train/val/test sources of ``parts`` after ``split`` (see the module doc).

    Checks that the file was made for this train part (``train_size``) and that it holds test
    indices iff the dataset has no test part; ``remake_hint`` (e.g. "`evalbench splits x`")
    goes verbatim into the messages. Labels come along without decoding any image.
    """
    n = len(parts.train)
    if split.get("train_size") != n:
        raise ConfigError(
            f"task {task!r}: split file {split_file} was made for a train part of "
            f"{split.get('train_size')} images, but the data has {n}; point the task at the right data "
            f"or remake the split with {remake_hint}"
        )
    has_own_test = parts.test is not None
    if has_own_test == ("test" in split):
        raise ConfigError(
            f"task {task!r}: split file {split_file} "
            + ("holds test indices but the dataset has its own test set" if has_own_test
               else "has no test indices and the dataset has no test set; set splits.test_fraction")
        )
    where = f"task {task!r}: split file {split_file}"
    val_idx = _indices(split, "val", n, where)
    test_idx = _indices(split, "test", n, where)
    if np.intersect1d(val_idx, test_idx).size:
        raise ConfigError(f"{where}: val and test indices overlap; remake the split with {remake_hint}")
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    keep[test_idx] = False
    test = parts.test if parts.test is not None else SubsetSource(parts.train, test_idx)
    return SplitSets(train=SubsetSource(parts.train, np.flatnonzero(keep)), val=SubsetSource(parts.train, val_idx),
                     test=test)
