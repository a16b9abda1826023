"""Suites (checkpoints x tasks x protocols x seeds) and the plan: one Job per combination.

Every job has a stable key: the hash of the checkpoint bytes (or random-init recipe),
architecture, preprocessing, task@version and split file, protocol@version with its params,
and the seed (DESIGN.md §2). A key already stored with status ok is skipped: resume = run again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from evalbench.checkpoints import CheckpointSpec, checkpoint_identity, parse_checkpoint
from evalbench.errors import ConfigError, EvalbenchError
from evalbench.protocols import ProtocolSpec, resolve_protocol
from evalbench.tasks import TaskSpec, read_split_file, resolve_task
from evalbench.yamlio import check_mapping, read_yaml

SUITE_KEYS = ("checkpoints", "tasks", "protocols", "seeds", "name", "description")


@dataclass(frozen=True)
class Suite:
    name: str
    checkpoints: tuple[CheckpointSpec, ...]
    tasks: tuple[TaskSpec, ...]
    protocols: tuple[ProtocolSpec, ...]
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Job:
    checkpoint: CheckpointSpec
    task: TaskSpec
    protocol: ProtocolSpec
    seed: int
    key: str
    ckpt_id: Optional[str]  # sha256 / random-init recipe; None when the checkpoint cannot be hashed
    split_sha256: Optional[str]
    plan_error: Optional[str] = None  # the job already failed at planning (missing file, split)

    @property
    def group(self) -> tuple[str, str]:
        """Jobs of one (checkpoint, task) share one feature extraction."""
        return (self.checkpoint.name, self.task.ref)

    @property
    def label(self) -> str:
        return f"{self.checkpoint.name} | {self.task.name} | {self.protocol.name} | seed {self.seed}"


def _protocol_entry(entry: Any, *, where: str) -> ProtocolSpec:
    if isinstance(entry, str):
        return resolve_protocol(entry)
    d = check_mapping(entry, where=where, required=("name",), optional=("params",))
    return resolve_protocol(str(d["name"])).with_params(dict(d.get("params") or {}), where=where)


def _list(d: dict, key: str, where: str) -> list:
    value = d[key]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {key!r} must be a non-empty list")
    return value


def parse_suite(data: Any, *, source: Path) -> Suite:
    where = str(source)
    d = check_mapping(data, where=where, required=("checkpoints", "tasks", "protocols"), optional=SUITE_KEYS[3:])
    base = source.parent
    ckpts = tuple(parse_checkpoint(c, where=f"{where}: checkpoints[{i}]", base_dir=base)
                  for i, c in enumerate(_list(d, "checkpoints", where)))
    names = [c.name for c in ckpts]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{where}: checkpoint name {dup!r} is used twice; names label the table rows")
    tasks = tuple(resolve_task(str(t) if not str(t).endswith((".yaml", ".yml")) else str(base / t))
                  for t in _list(d, "tasks", where))
    protocols = tuple(_protocol_entry(p, where=f"{where}: protocols[{i}]") for i, p in enumerate(_list(d, "protocols", where)))
    seeds = tuple(int(s) for s in (_list(d, "seeds", where) if "seeds" in d else [0]))
    return Suite(str(d.get("name", source.stem)), ckpts, tasks, protocols, seeds)


def load_suite(path: Path) -> Suite:
    return parse_suite(read_yaml(path), source=path.resolve())


def job_key(*, ckpt_id: str, ckpt: CheckpointSpec, task: TaskSpec, split_sha: str, protocol: ProtocolSpec, seed: int) -> str:
    payload = {"ckpt": ckpt_id, "arch": ckpt.arch, "prep": ckpt.preprocessing.as_dict(), "skip": list(ckpt.skip_missing),
               "task": task.ref, "splits": split_sha, "protocol": protocol.ref, "params": protocol.params, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _safe(fn, *args) -> tuple[Optional[str], Optional[str]]:
    try:
        return fn(*args), None
    except EvalbenchError as e:
        return None, str(e)


def plan(suite: Suite) -> list[Job]:
    """One job per (checkpoint, task, protocol, seed); unhashable inputs become failed jobs."""
    ids = {c.name: _safe(checkpoint_identity, c) for c in suite.checkpoints}
    shas = {t.ref: _safe(lambda t: read_split_file(t)[1], t) for t in suite.tasks}
    jobs = []
    for c in suite.checkpoints:
        for t in suite.tasks:
            for p in suite.protocols:
                for seed in suite.seeds:
                    (cid, cerr), (sha, serr) = ids[c.name], shas[t.ref]
                    if cerr or serr:  # stable key from what is known, so the failure is recorded once
                        key = job_key(ckpt_id=f"unavailable:{c.path}", ckpt=c, task=t, split_sha=sha or "unavailable",
                                      protocol=p, seed=seed)
                    else:
                        key = job_key(ckpt_id=cid, ckpt=c, task=t, split_sha=sha, protocol=p, seed=seed)
                    jobs.append(Job(c, t, p, seed, key, cid, sha, cerr or serr))
    return jobs
