"""Tasks: a dataset (registered loader + params) plus fixed split index files.

A task YAML under tasks/ says which loader reads the data, how many classes it has and which
index file under tasks/splits/ holds the validation indices (held out of the dataset's train
part) and, for datasets without a test set of their own, the test indices. The split files
are committed, so every machine evaluates on exactly the same examples.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from evalbench.data import LOADERS, ImageArrays
from evalbench.errors import ConfigError, EvalbenchError
from evalbench.paths import TASKS_DIR
from evalbench.yamlio import check_mapping, find_yaml, read_yaml, yaml_files

TASK_KEYS_REQUIRED = ("name", "version", "loader", "num_classes", "splits")
TASK_KEYS_OPTIONAL = ("description", "root", "params", "metric", "install")
SPLITS_KEYS = ("file", "val_fraction", "test_fraction", "seed")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    loader: str
    num_classes: int
    split_file: Path
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    split_seed: int = 0
    root: Optional[str] = None
    params: dict = field(default_factory=dict)
    metric: str = "top1"
    description: str = ""
    source: Optional[Path] = None  # the YAML file this came from

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class TaskData:
    spec: TaskSpec
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    split_sha256: str


def parse_task(data: Any, *, source: Path) -> TaskSpec:
    where = str(source)
    d = check_mapping(data, where=where, required=TASK_KEYS_REQUIRED, optional=TASK_KEYS_OPTIONAL)
    s = check_mapping(d["splits"], where=f"{where}: splits", required=("file",), optional=SPLITS_KEYS[1:])
    if d["loader"] not in LOADERS:
        LOADERS.get(d["loader"])  # raises KeyError listing the known loaders
    return TaskSpec(
        name=str(d["name"]),
        version=int(d["version"]),
        loader=str(d["loader"]),
        num_classes=int(d["num_classes"]),
        split_file=(source.parent / s["file"]).resolve(),
        val_fraction=float(s.get("val_fraction", 0.1)),
        test_fraction=float(s.get("test_fraction", 0.0)),
        split_seed=int(s.get("seed", 0)),
        root=d.get("root"),
        params=dict(d.get("params") or {}),
        metric=str(d.get("metric", "top1")),
        description=str(d.get("description", "")),
        source=source,
    )


def builtin_task_files() -> dict[str, Path]:
    return yaml_files(TASKS_DIR)


def resolve_task(name_or_path: str) -> TaskSpec:
    """A built-in task name (tasks/NAME.yaml) or a path to a task YAML file."""
    path = find_yaml(name_or_path, TASKS_DIR, kind="task")
    return parse_task(read_yaml(path), source=path)


def make_split(train_size: int, *, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Uniformly random, seeded, disjoint val (and test) index sets out of ``range(train_size)``."""
    perm = np.random.default_rng(seed).permutation(train_size)
    n_test = int(round(test_fraction * train_size))
    n_val = int(round(val_fraction * train_size))
    split: dict[str, Any] = {"seed": seed, "train_size": train_size}
    split["val"] = sorted(int(i) for i in perm[n_test : n_test + n_val])
    if n_test:
        split["test"] = sorted(int(i) for i in perm[:n_test])
    return split


def write_split_file(spec: TaskSpec, train_size: int) -> Path:
    split = {"task": spec.name, **make_split(
        train_size, val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, seed=spec.split_seed
    )}
    spec.split_file.parent.mkdir(parents=True, exist_ok=True)
    spec.split_file.write_text(json.dumps(split, separators=(",", ":")) + "\n")
    return spec.split_file


def read_split_file(spec: TaskSpec) -> tuple[dict, str]:
    if not spec.split_file.exists():
        raise ConfigError(
            f"task {spec.name!r}: split index file {spec.split_file} does not exist; "
            f"create it once with `evalbench splits {spec.source or spec.name}` and keep it with the task"
        )
    raw = spec.split_file.read_bytes()
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def task_root(spec: TaskSpec) -> Optional[Path]:
    if spec.root is None:
        return None
    return Path(os.path.expanduser(os.path.expandvars(spec.root)))


def load_task(spec: TaskSpec) -> TaskData:
    """Read the data with the task's loader and apply its split file (train/val/test)."""
    parts = LOADERS.get(spec.loader)(root=task_root(spec), **spec.params)
    split, sha = read_split_file(spec)
    n = len(parts.train)
    if split.get("train_size") != n:
        raise ConfigError(
            f"task {spec.name!r}: split file {spec.split_file} was made for a train part of "
            f"{split.get('train_size')} images, but the data has {n}; point the task at the right data "
            f"or remake the split with `evalbench splits {spec.source or spec.name}`"
        )
    val_idx = np.asarray(split["val"], dtype=np.int64)
    has_own_test = parts.test is not None
    if has_own_test == ("test" in split):
        raise ConfigError(
            f"task {spec.name!r}: split file {spec.split_file} "
            + ("holds test indices but the dataset has its own test set" if has_own_test
               else "has no test indices and the dataset has no test set; set splits.test_fraction")
        )
    test_idx = np.asarray(split.get("test", []), dtype=np.int64)
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    keep[test_idx] = False
    test = parts.test if parts.test is not None else parts.train.subset(test_idx)
    return TaskData(spec, parts.train.subset(np.flatnonzero(keep)), parts.train.subset(val_idx), test, sha)


def data_status(spec: TaskSpec) -> str:
    """'ready' when the task's data loads here, else 'missing' (`evalbench run` says how to get it)."""
    try:
        LOADERS.get(spec.loader)(root=task_root(spec), **spec.params)
        return "ready"
    except EvalbenchError:
        return "missing"
