"""The record: one JSON file per evaluation (checkpoint x task x protocol x seed), DESIGN.md §6.

``Record.from_dict`` validates what it reads: a corrupt, truncated or foreign file is refused
with a reason, so ``table`` skips it (saying so) and ``run`` evaluates its job again.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional

SCHEMA = 2
STATUSES = ("ok", "error")


class InvalidRecord(ValueError):
    """A file in the records store that is not a valid record of this schema."""


@dataclass(frozen=True)
class Record:
    key: str
    checkpoint: dict  # name, arch, weights (identity payload), sha256, random_init, init_seed, path, data, meta
    task: dict  # name, version, loader, split_sha256, data (fingerprint)
    protocol: dict  # name, version, implementation, params, stochastic, view
    seed: Optional[int]  # None: a deterministic protocol (runs once whatever the suite's seeds)
    status: str
    metrics: dict[str, float]
    details: dict
    error: Optional[str]
    env: dict  # evalbench, git, torch, python, host, pid, node, device
    timing_s: dict
    created: str
    features: Optional[str] = None  # identity of the features artifact it was computed from
    schema: int = SCHEMA

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"schema": d.pop("schema"), "key": d.pop("key"), **d}

    @classmethod
    def from_dict(cls, d: Any) -> "Record":
        _check(d)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "key": str, "checkpoint": dict, "task": dict, "protocol": dict, "status": str, "metrics": dict,
    "details": dict, "env": dict, "timing_s": dict, "created": str,
}


def _check(d: Any) -> None:
    if not isinstance(d, dict):
        raise InvalidRecord(f"expected a JSON object, got {type(d).__name__}")
    if d.get("schema") != SCHEMA:
        raise InvalidRecord(f"schema {d.get('schema')!r}, expected {SCHEMA} (a record of another evalbench version, "
                            "or not a record)")
    missing = [f.name for f in fields(Record) if f.name not in d and f.default is MISSING]
    if missing:
        raise InvalidRecord(f"field {missing[0]!r} missing")
    for k, t in _REQUIRED.items():
        if not isinstance(d.get(k), t):
            raise InvalidRecord(f"field {k!r} missing or not a {t.__name__ if isinstance(t, type) else t}")
    if d["status"] not in STATUSES:
        raise InvalidRecord(f"status {d['status']!r} is not one of {STATUSES}")
    seed = d.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidRecord(f"seed {seed!r} is not an integer or null")
    for k in ("name", "arch"):
        if not isinstance(d["checkpoint"].get(k), str):
            raise InvalidRecord(f"checkpoint.{k} missing")
    for part in ("task", "protocol"):
        if not isinstance(d[part].get("name"), str) or not isinstance(d[part].get("version"), int):
            raise InvalidRecord(f"{part}.name / {part}.version missing")
    _check_shapes(d)
    if d["status"] == "ok":
        if not d["metrics"]:
            raise InvalidRecord("status ok without metrics")
        bad = [m for m, v in d["metrics"].items()
               if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
        if bad:
            raise InvalidRecord(f"metric {bad[0]!r} is not a finite number")
    elif not isinstance(d.get("error"), str):
        raise InvalidRecord("status error without an error message")


def _check_shapes(d: dict) -> None:
    """The nested fields the tables read have the types they read them as (a damaged file is refused
    here, with a reason, instead of failing `table` or `run` later)."""
    c = d["checkpoint"]
    if not isinstance(c.get("random_init", False), bool):
        raise InvalidRecord("checkpoint.random_init is not true or false")
    meta = c.get("meta", {})
    if meta is not None and not isinstance(meta, dict):
        raise InvalidRecord("checkpoint.meta is not a mapping")
    for name in ("pretrain", "sweep"):
        part = (meta or {}).get(name)
        if part is not None and not isinstance(part, dict):
            raise InvalidRecord(f"checkpoint.meta.{name} is not a mapping")
    pretrain = (meta or {}).get("pretrain") or {}
    if not isinstance(pretrain.get("knobs") or {}, dict):
        raise InvalidRecord("checkpoint.meta.pretrain.knobs is not a mapping")
    sweep = (meta or {}).get("sweep")
    if sweep and not all(k in sweep for k in ("point", "label", "base", "overrides", "seed")):
        raise InvalidRecord("checkpoint.meta.sweep lacks point, label, base, overrides or seed")
    if not isinstance(d["protocol"].get("params"), dict):
        raise InvalidRecord("protocol.params is not a mapping")
    if d.get("error") is not None and not isinstance(d["error"], str):
        raise InvalidRecord("error is not a string")


@dataclass
class Problems:
    """Files the store could not read as records: (path, reason)."""

    items: list[tuple[str, str]] = field(default_factory=list)
