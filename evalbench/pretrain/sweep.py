"""Sweeps: a base pretraining config, a grid of knob values (or explicit points), seeds, and the
evaluation (tasks, protocols). Each (point, seed) is a checkpoint made by a ``pretrain`` stage
(identity = hash of its full config and data), evaluated downstream like any checkpoint; a
random-init row of the same architecture is always added (DESIGN.md §5).

```yaml
name: simclr-temperature
base: {method: simclr, arch: builtin:small-cnn, task: mnist5k, epochs: 5}   # or a path to a config YAML
grid: {loss.temperature: [0.1, 0.5, 1.0]}      # cartesian product of dotted knob paths
# points: [{loss.temperature: 0.1}, {head.kind: none}]   # or an explicit list
seeds: [0]
evaluate: {tasks: [digits, mnist5k], protocols: [knn, linear]}
```
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalbench.core.errors import ConfigError
from evalbench.core.yamlio import check_mapping, read_yaml
from evalbench.pretrain.config import PretrainConfig, apply_overrides, parse_pretrain_config
from evalbench.specs.checkpoint import CheckpointSpec, RandomWeights, StageWeights
from evalbench.specs.suite import Suite, check_sizes, parse_protocol_entry
from evalbench.specs.task import resolve_task

SWEEP_KEYS = ("name", "description", "base", "grid", "points", "seeds", "evaluate")
MAX_POINTS = 24  # more (points x seeds) needs --yes


@dataclass(frozen=True)
class SweepPoint:
    index: int
    overrides: dict  # dotted knob path -> value ({} for the base point)
    config: PretrainConfig  # seed not yet applied

    @property
    def label(self) -> str:
        return "base" if not self.overrides else " ".join(f"{k}={_fmt(v)}" for k, v in self.overrides.items())


@dataclass(frozen=True)
class Sweep:
    name: str
    base: PretrainConfig
    points: tuple[SweepPoint, ...]
    seeds: tuple[int, ...]
    suite: Suite  # the random-init row + one checkpoint per (point, seed), x tasks x protocols


def _fmt(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _grid_points(grid: Any, *, where: str) -> list[dict]:
    g = check_mapping(grid, where=f"{where}: grid", optional=list(grid) if isinstance(grid, dict) else ())
    for k, values in g.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{k} must be a non-empty list of values")
    keys = list(g)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(g[k] for k in keys))]


def _explicit_points(points: Any, *, where: str) -> list[dict]:
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError(f"{where}: points must be a list of mappings of dotted knob paths to values")
    return [dict(p) for p in points]


def _base_data(base: Any, *, source: Path) -> dict:
    if isinstance(base, str):
        path = (source.parent / base) if not Path(base).is_absolute() else Path(base)
        base = read_yaml(path)
    if not isinstance(base, dict):
        raise ConfigError(f"{source}: base must be a pretraining config (a mapping) or the path of one")
    return base


def parse_sweep(data: Any, *, source: Path, max_points: int = MAX_POINTS, yes: bool = False) -> Sweep:
    where = str(source)
    d = check_mapping(data, where=where, required=("base", "evaluate"), optional=SWEEP_KEYS)
    if ("grid" in d) == ("points" in d):
        raise ConfigError(f"{where}: give either grid: (a cartesian product) or points: (an explicit list)")
    raw_base = _base_data(d["base"], source=source)
    base = parse_pretrain_config(raw_base, where=f"{where}: base")
    overrides = _grid_points(d["grid"], where=where) if "grid" in d else _explicit_points(d["points"], where=where)
    if not overrides:
        raise ConfigError(f"{where}: the grid expands to zero points")
    seeds = d.get("seeds", [base.seed])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers")
    points: list[SweepPoint] = []
    for i, o in enumerate(overrides):
        cfg = parse_pretrain_config(apply_overrides(raw_base, o, where=f"{where}: point {i}"), where=f"{where}: point {i}")
        points.append(SweepPoint(i, o, cfg))
    if not any(p.config == base for p in points):  # the base point is always part of the table
        points.insert(0, SweepPoint(-1, {}, base))
    points = [replace(p, index=i) for i, p in enumerate(points)]
    n = len(points) * len(seeds)
    if n > max_points and not yes:
        raise ConfigError(f"{where}: {len(points)} points x {len(seeds)} seeds = {n} pretrainings, more than "
                          f"{max_points}; pass --yes to run them all")
    ev = check_mapping(d["evaluate"], where=f"{where}: evaluate", required=("tasks", "protocols"))
    tasks = tuple(resolve_task(str(t) if not str(t).endswith((".yaml", ".yml")) else str(source.parent / t))
                  for t in ev["tasks"])
    protocols = tuple(parse_protocol_entry(p, where=f"{where}: evaluate.protocols[{i}]")
                      for i, p in enumerate(ev["protocols"]))
    check_sizes(tasks, protocols, ev["protocols"], where=f"{where}: evaluate")  # before any pretraining
    name = str(d.get("name", source.stem))
    ckpts = [CheckpointSpec(name=f"{base.arch.split(':')[-1]} random init", arch=base.arch, data=base.data,
                            weights=RandomWeights(0), meta={"sweep": {"name": name, "point": None, "label": "random init",
                                                       "overrides": {}, "seed": 0, "base": False}})]
    for p in points:
        for s in seeds:
            cfg = replace(p.config, seed=s)
            label = f"p{p.index} {p.label}" + (f" seed{s}" if len(seeds) > 1 else "")
            ckpts.append(CheckpointSpec(
                name=label, arch=cfg.arch, data=cfg.data, weights=StageWeights(kind="pretrain", inputs={"config": cfg}),
                meta={"sweep": {"name": name, "point": p.index, "label": p.label, "overrides": p.overrides, "seed": s,
                                "base": p.config == base},
                      "pretrain": {"method": cfg.method, "seed": s, "knobs": cfg.knobs(), "task": cfg.task,
                                   "epochs": cfg.epochs}}))
    suite = Suite(name=name, checkpoints=tuple(ckpts), tasks=tasks, protocols=protocols, seeds=(0,))
    return Sweep(name, base, tuple(points), tuple(seeds), suite)


def load_sweep(path: Path, *, max_points: int = MAX_POINTS, yes: bool = False) -> Sweep:
    return parse_sweep(read_yaml(path), source=Path(path).resolve(), max_points=max_points, yes=yes)
