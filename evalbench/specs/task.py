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

import inspect
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
from pydantic import Field, model_validator

from evalbench.core.errors import ConfigError, EvalbenchError
from evalbench.core.filehash import HashFile, sha256_file
from evalbench.core.paths import TASKS_DIR
from evalbench.core.validate import Doc, Fraction, Name, PositiveInt, Seed, Text, join_where, validate
from evalbench.core.yamlio import find_yaml, read_yaml, yaml_files
from evalbench.data import LOADERS
from evalbench.data.splits import SplitSets, apply_split, make_split, read_split_file, write_split_file
from evalbench.protocols import TaskSizes


class SplitsDoc(Doc):
    file: Name
    val_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False, description="a number in (0, 1)")] = 0.1
    test_fraction: Fraction = 0.0
    seed: Seed = 0

    @model_validator(mode="after")
    def _leaves_train(self) -> "SplitsDoc":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves no "
                             "training images; their sum must be below 1")
        return self


class TaskDoc(Doc):
    """tasks/NAME.yaml as written (DESIGN.md §4)."""

    name: Name
    version: PositiveInt
    loader: Name
    num_classes: Annotated[int, Field(ge=2, description="an integer >= 2")]
    splits: SplitsDoc
    root: Optional[Name] = None
    params: Optional[dict] = None
    metric: Name = "top1"
    description: Text = ""
    install: Text = ""


TASK_KEYS_REQUIRED = tuple(k for k, f in TaskDoc.model_fields.items() if f.is_required())
TASK_KEYS_OPTIONAL = tuple(k for k, f in TaskDoc.model_fields.items() if not f.is_required())
SPLITS_KEYS = tuple(SplitsDoc.model_fields)


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


def _loader_params(loader: str, params: dict, *, where: str) -> None:
    """The params are keyword arguments the loader takes (their values are the loader's to check)."""
    try:
        load = LOADERS.get(loader).load
    except KeyError as e:
        raise ConfigError(f"{join_where(where, ('loader',))}: {e.args[0]}") from None
    accepted = [n for n, p in inspect.signature(load).parameters.items()
                if n != "root" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in params:
        if key not in accepted:
            raise ConfigError(f"{join_where(where, ('params',))}: loader {loader!r} takes no param {key!r}; "
                              f"known: {', '.join(accepted) or 'none'}")


def parse_task(data: Any, *, source: Path) -> TaskSpec:
    where = str(source)
    d = validate(TaskDoc, data, where=where)
    params = dict(d.params or {})
    _loader_params(d.loader, params, where=where)
    return TaskSpec(
        name=d.name,
        version=d.version,
        loader=d.loader,
        num_classes=d.num_classes,
        split_file=(source.parent / d.splits.file).resolve(),
        val_fraction=d.splits.val_fraction,
        test_fraction=d.splits.test_fraction,
        split_seed=d.splits.seed,
        root=d.root,
        params=params,
        metric=d.metric,
        description=d.description,
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


def task_sizes(spec: TaskSpec) -> Optional[TaskSizes]:
    """The task's bank (train + val) and test sizes from its split file alone; None where the file
    cannot be read (planning then records why)."""
    try:
        split, _ = read_task_split(spec)
        train_size, test = split.get("train_size"), split.get("test")
        if not isinstance(train_size, int) or (test is not None and not isinstance(test, list)):
            return None
        return TaskSizes(task=spec.name, bank=train_size - len(test or []), test=None if test is None else len(test),
                         class_counts=partial(task_class_counts, spec))
    except EvalbenchError:
        return None


_CLASS_COUNTS: dict[str, dict[str, tuple[int, ...]]] = {}  # memo: one label read per task data per process


def task_class_counts(spec: TaskSpec) -> Optional[dict[str, tuple[int, ...]]]:
    """Images per class of the task's train, val and test splits after its split file, from the labels
    alone (ImageSource.labels: no image decoded); None where the data or split file cannot be read
    (planning then records why). Memoised per (loader, params, root, split file hash)."""
    try:
        _, split_sha = read_task_split(spec)
        key = repr((spec.loader, spec.params, str(task_root(spec)), split_sha, spec.num_classes))
        if key not in _CLASS_COUNTS:
            sets = load_task(spec)
            _CLASS_COUNTS[key] = {s: tuple(int(n) for n in np.bincount(getattr(sets, s).labels, minlength=spec.num_classes))
                                  for s in ("train", "val", "test")}
        return _CLASS_COUNTS[key]
    except (EvalbenchError, OSError):
        return None


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
