"""Checkpoints as a suite lists them: name, architecture, where the weights come from, and
the preprocessing the encoder gets (defaults from the family, overridable per checkpoint).

Where the weights come from (``source``) fixes their identity:
- ``FileWeights``: a file; identity = its content sha256 (memoised on path, size, mtime_ns);
- ``RandomWeights``: the explicit random-init baseline; identity = its seed;
- ``StageWeights``: weights an upstream stage produces (pretraining); identity = that stage's
  identity (a hash of its config, data and seed), known before the weights exist.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from evalbench.core.errors import CheckpointError, ConfigError
from evalbench.core.filehash import HashFile
from evalbench.core.yamlio import check_mapping
from evalbench.encoders import DataConfig, default_data_config
from evalbench.encoders.base import INTERPOLATIONS

SIDECAR_MARK = "evalbench_pretrain"  # marks the JSON that `evalbench pretrain` writes beside a checkpoint
CKPT_KEYS = ("name", "arch", "path", "init", "init_seed", "preprocessing", "skip_missing", "meta")
PREP_KEYS = ("in_chans", "input_size", "mean", "std", "interpolation")


@dataclass(frozen=True)
class FileWeights:
    path: Path


@dataclass(frozen=True)
class RandomWeights:
    seed: int = 0


@dataclass(frozen=True)
class StageWeights:
    """Weights written by an upstream stage (kind + its inputs) into the artifact store."""

    kind: str
    inputs: dict = field(default_factory=dict)


WeightsSource = Union[FileWeights, RandomWeights, StageWeights]


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    arch: str
    data: DataConfig
    weights: WeightsSource
    skip_missing: tuple[str, ...] = ()  # glob patterns of encoder keys allowed to stay unfilled
    meta: dict = field(default_factory=dict)

    @property
    def random_init(self) -> bool:
        return isinstance(self.weights, RandomWeights)

    @property
    def path(self) -> Optional[Path]:
        return self.weights.path if isinstance(self.weights, FileWeights) else None


def file_weights_identity(spec: CheckpointSpec, *, hash_file: HashFile) -> dict:
    path = spec.weights.path
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {spec.name!r}: file {path} does not exist; fix `path:` in the suite "
            "(relative paths are relative to the suite file)")
    return {"sha256": hash_file(path)}


def _number_list(value: Any, *, where: str) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number or a list of numbers, got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{where}: expected finite numbers, got {value!r}")
    return out


def parse_data_config(arch: str, prep: Any, *, where: str) -> DataConfig:
    """The family's default preprocessing for ``arch``, with the suite's overrides applied."""
    p = check_mapping(prep or {}, where=where, optional=PREP_KEYS)
    in_chans = p.get("in_chans")
    if in_chans is not None and (not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans not in (1, 3)):
        raise ConfigError(f"{where}: in_chans must be 1 or 3, got {in_chans!r}")
    base = default_data_config(arch, in_chans=in_chans)
    size = p.get("input_size", base.input_size)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 2):
        raise ConfigError(f"{where}: input_size must be an integer number of pixels >= 2, got {size!r}")
    mean = _number_list(p["mean"], where=f"{where}: mean") if "mean" in p else base.mean
    std = _number_list(p["std"], where=f"{where}: std") if "std" in p else base.std
    if len(mean) not in (1, base.in_chans) or len(std) not in (1, base.in_chans):
        raise ConfigError(f"{where}: mean/std need 1 or in_chans={base.in_chans} values")
    if any(s <= 0 for s in std):
        raise ConfigError(f"{where}: std values must be > 0, got {list(std)}")
    interp = str(p.get("interpolation", base.interpolation))
    if interp not in INTERPOLATIONS:
        raise ConfigError(f"{where}: interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interp!r}")
    return DataConfig(in_chans=base.in_chans, input_size=size, mean=mean, std=std, interpolation=interp)


def _patterns(value: Any, *, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of glob patterns, e.g. ['fc.*']")
    return tuple(value)


def read_sidecar(weights: Path) -> Optional[dict]:
    """The pretraining metadata evalbench wrote beside a checkpoint file (method, knobs, ...), if any."""
    try:
        meta = json.loads(Path(weights).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get(SIDECAR_MARK) == 1 else None


def pretrain_meta(sidecar: dict) -> dict:
    """What a table shows of a pretrained checkpoint: its method, seed and every knob."""
    return {"pretrain": {"method": sidecar.get("method"), "seed": sidecar.get("seed"), "knobs": sidecar.get("knobs", {}),
                         "task": (sidecar.get("task") or {}).get("name"), "epochs": sidecar.get("epochs")}}


def parse_checkpoint(data: Any, *, where: str, base_dir: Path) -> CheckpointSpec:
    d = check_mapping(data, where=where, required=("name", "arch"), optional=CKPT_KEYS[2:])
    arch = str(d["arch"])
    init = d.get("init", "checkpoint")
    if init not in ("checkpoint", "random"):
        raise ConfigError(f"{where}: init must be 'checkpoint' or 'random' (the labelled random-weights baseline)")
    if (init == "random") == ("path" in d):
        raise ConfigError(f"{where}: give a path, or init: random for the random-weights baseline (not both)")
    if init == "random":
        seed = d.get("init_seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"{where}: init_seed must be an integer, got {seed!r}")
        weights: WeightsSource = RandomWeights(seed)
    else:
        if not isinstance(d["path"], str) or not d["path"]:
            raise ConfigError(f"{where}: path must be a file path (string), got {d['path']!r}")
        path = Path(d["path"]).expanduser()
        weights = FileWeights(path if path.is_absolute() else (base_dir / path))
    meta = d.get("meta", {})
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: meta must be a mapping")
    sidecar = read_sidecar(weights.path) if isinstance(weights, FileWeights) else None
    if sidecar is not None:
        meta = {**pretrain_meta(sidecar), **meta}
    return CheckpointSpec(
        name=str(d["name"]), arch=arch,
        data=parse_data_config(arch, d.get("preprocessing"), where=f"{where}: preprocessing"),
        weights=weights, skip_missing=_patterns(d.get("skip_missing", ()), where=f"{where}: skip_missing"),
        meta=dict(meta),
    )
