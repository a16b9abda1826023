"""A task's label subsets (data/subsets.py) read, checked or (re)made: ``evalbench subsets TASK``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from evalbench.core.errors import ConfigError
from evalbench.data.splits import SplitSets
from evalbench.data.subsets import (ALGORITHM, DRAWS, FRACTIONS, SEED, file_sha256, fraction_key, make_subsets,
                                    read_subsets_file, select_subset, subsets_path, write_subsets_file)
from evalbench.specs.task import TaskSpec, load_task, read_task_split


def task_subsets_path(spec: TaskSpec) -> Path:
    return subsets_path(spec.split_file)


def subsets_identity(spec: TaskSpec) -> Optional[str]:
    """The stored file's sha256 (None: not stored, draws are computed by the same algorithm)."""
    return file_sha256(task_subsets_path(spec))


def write_task_subsets(spec: TaskSpec, *, fractions: Sequence[float] = FRACTIONS, draws: int = DRAWS,
                       seed: int = SEED) -> Path:
    """Make (or remake, identically) the task's subsets file from its train split's labels."""
    sets = load_task(spec)
    _, split_sha = read_task_split(spec)
    doc = make_subsets(np.asarray(sets.train.labels), num_classes=spec.num_classes, task=spec.name,
                       split_sha256=split_sha, fractions=fractions, draws=draws, seed=seed)
    return write_subsets_file(task_subsets_path(spec), doc)


def task_subset(spec: TaskSpec, *, fraction: float, draw: int,
                sets: Optional[SplitSets] = None) -> tuple[SplitSets, np.ndarray, dict[str, Any]]:
    """(the task's splits, train-split positions of the labelled subset, what the record says about it)."""
    sets = sets if sets is not None else load_task(spec)
    _, split_sha = read_task_split(spec)
    path = task_subsets_path(spec)
    idx, info = select_subset(np.asarray(sets.train.labels), fraction=fraction, draw=draw,
                              num_classes=spec.num_classes, split_sha256=split_sha,
                              doc=read_subsets_file(path), where=f"subsets file {path}")
    return sets, idx, info


def subset_plan_payload(spec: TaskSpec, *, fraction: float, draw: int) -> dict[str, Any]:
    """What fixes a draw's images at plan time (the stored file's hash, or the algorithm that computes
    it); a ConfigError where the stored file has no such draw (checked before any work)."""
    path = task_subsets_path(spec)
    doc = read_subsets_file(path)
    entry = (doc or {}).get("fractions", {}).get(fraction_key(fraction)) if fraction < 1 else None
    if entry is not None and not 0 <= draw < len(entry["indices"]):
        raise ConfigError(f"subsets file {path} holds {len(entry['indices'])} draws of label fraction {fraction}; "
                          f"seed {draw} picks draw {draw}, which is not among them: use seeds below "
                          f"{len(entry['indices'])} or remake the file with more draws (`evalbench subsets TASK`)")
    return {"fraction": fraction, "draw": draw, "algorithm": ALGORITHM,
            "file_sha256": file_sha256(path) if entry is not None else None}
