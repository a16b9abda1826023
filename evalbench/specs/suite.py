"""Suites: checkpoints x tasks x protocols x seeds, parsed and validated once at the edge.

The plan (stages and their identities) is made from a suite by :mod:`evalbench.run.plan`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalbench.core.errors import ConfigError
from evalbench.core.yamlio import check_mapping, read_yaml
from evalbench.specs.checkpoint import CheckpointSpec, parse_checkpoint
from evalbench.specs.protocol import ProtocolSpec, resolve_protocol
from evalbench.specs.task import TaskSpec, resolve_task

SUITE_KEYS = ("checkpoints", "tasks", "protocols", "seeds", "amp", "name", "description")


@dataclass(frozen=True)
class Suite:
    name: str
    checkpoints: tuple[CheckpointSpec, ...]
    tasks: tuple[TaskSpec, ...]
    protocols: tuple[ProtocolSpec, ...]
    seeds: tuple[int, ...] = (0,)
    amp: bool = False  # extract features under float16 autocast on CUDA (part of the features' identity)


def parse_protocol_entry(entry: Any, *, where: str) -> ProtocolSpec:
    """A protocol name, a YAML path, or {name, params} with overrides of its params."""
    if isinstance(entry, str):
        return resolve_protocol(entry)
    d = check_mapping(entry, where=where, required=("name",), optional=("params",))
    params = d.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: params must be a mapping of protocol params")
    return resolve_protocol(str(d["name"])).with_params(dict(params), where=where)


def _list(d: Any, key: str, where: str) -> list:
    value = d[key]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {key!r} must be a non-empty list")
    return value


def _seed(value: Any, *, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: seeds must be integers, got {value!r}")
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
    protocols = tuple(parse_protocol_entry(p, where=f"{where}: protocols[{i}]") for i, p in enumerate(_list(d, "protocols", where)))
    seeds = tuple(_seed(s, where=where) for s in (_list(d, "seeds", where) if "seeds" in d else [0]))
    amp = d.get("amp", False)
    if not isinstance(amp, bool):
        raise ConfigError(f"{where}: amp must be true or false (float16 autocast for extraction on CUDA)")
    return Suite(str(d.get("name", source.stem)), ckpts, tasks, protocols, seeds, amp)


def load_suite(path: Path) -> Suite:
    return parse_suite(read_yaml(path), source=Path(path).resolve())
