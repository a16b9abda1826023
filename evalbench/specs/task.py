"""Tasks: a dataset (registered loader + params) plus a fixed split index file (DESIGN.md §4).

A task YAML under tasks/ says which loader reads the data, how many classes it has and which
index file under tasks/splits/ holds the validation indices (held out of the dataset's train
part) and, for datasets without a test set of their own, the test indices. The split files
are committed, so every machine evaluates on exactly the same examples.

A task's identity (:func:`task_identity_payload`) is everything that fixes its examples:
loader, params, num_classes, version, the split file's hash and a fingerprint of the data
itself, so pointing ``root:`` at other data never reuses old numbers, while the same data at
another path keeps its identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from evalbench.core.errors import EvalbenchError
from evalbench.core.filehash import HashFile, sha256_file
from evalbench.core.paths import TASKS_DIR
from evalbench.core.yamlio import check_mapping, find_yaml, read_yaml, yaml_files
from evalbench.data import LOADERS
from evalbench.data.splits import SplitSets, apply_split, make_split, read_split_file, write_split_file

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

    @property
    def remake_hint(self) -> str:
        return f"`evalbench splits {self.source or self.name}`"


def parse_task(data: Any, *, source: Path) -> TaskSpec:
    where = str(source)
    d = check_mapping(data, where=where, required=TASK_KEYS_REQUIRED, optional=TASK_KEYS_OPTIONAL)
    s = check_mapping(d["splits"], where=f"{where}: splits", required=("file",), optional=SPLITS_KEYS[1:])
    LOADERS.get(str(d["loader"]))  # raises KeyError listing the known loaders
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


def task_root(spec: TaskSpec) -> Optional[Path]:
    if spec.root is None:
        return None
    return Path(os.path.expanduser(os.path.expandvars(spec.root)))


def read_task_split(spec: TaskSpec) -> tuple[dict, str]:
    return read_split_file(spec.split_file, how_to_make=spec.remake_hint)


def task_identity_payload(spec: TaskSpec, *, hash_file: HashFile = sha256_file) -> dict:
    """Everything that fixes the task's examples and labels (raises where the data is missing)."""
    _, split_sha = read_task_split(spec)
    fingerprint = LOADERS.get(spec.loader).fingerprint(root=task_root(spec), hash_file=hash_file, **spec.params)
    return {"name": spec.name, "version": spec.version, "loader": spec.loader, "params": spec.params,
            "num_classes": spec.num_classes, "split_sha256": split_sha, "data": fingerprint}


def load_task(spec: TaskSpec) -> SplitSets:
    """The task's train/val/test image sources (lazily decoded) after its split file."""
    parts = LOADERS.get(spec.loader).load(root=task_root(spec), **spec.params)
    split, _ = read_task_split(spec)
    return apply_split(parts, split, task=spec.name, split_file=spec.split_file, remake_hint=spec.remake_hint)


def write_task_split(spec: TaskSpec) -> Path:
    """Make the task's split index file from its data's train size (``evalbench splits``)."""
    parts = LOADERS.get(spec.loader).load(root=task_root(spec), **spec.params)
    split = {"task": spec.name, **make_split(len(parts.train), val_fraction=spec.val_fraction,
                                             test_fraction=spec.test_fraction, seed=spec.split_seed)}
    write_split_file(spec.split_file, split)
    return spec.split_file


def data_status(spec: TaskSpec) -> str:
    """'ready' when the task's data is on this machine, else 'missing' (`evalbench run` says how to get it)."""
    try:
        LOADERS.get(spec.loader).fingerprint(root=task_root(spec), **spec.params)
        return "ready"
    except EvalbenchError:
        return "missing"
