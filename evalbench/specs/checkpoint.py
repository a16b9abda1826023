"""Checkpoints as a suite lists them: name, architecture, where the weights come from, and
the preprocessing the encoder gets (defaults from the family, overridable per checkpoint).

Where the weights come from (``source``) fixes their identity:
- ``FileWeights``: a file; identity = its content sha256 (memoised on path, size, mtime_ns);
- ``RandomWeights``: the explicit random-init baseline; identity = its seed;
- ``StageWeights``: weights an upstream stage produces (pretraining); identity = that stage's
  identity (a hash of its config, data and seed), known before the weights exist.

How a file's tensors become the encoder's (``evalbench.checkpoints``): ``select`` (which
candidate encoder), ``rename`` rules, ``skip_missing`` / ``skip_unexpected`` patterns, inline or
from a ``rules:`` file (what ``evalbench inspect --write-rules`` writes); they change what is
loaded, so they are part of the extract identity. ``trust_pickle: true`` allows full unpickling
of a file the user trusts (it changes no number, so it is not).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from evalbench.checkpoints.rules import LoadRules, check_rule
from evalbench.core.errors import CheckpointError, ConfigError
from evalbench.core.filehash import HashFile
from evalbench.core.yamlio import check_mapping, read_yaml
from evalbench.encoders import DataConfig, default_data_config
from evalbench.encoders.base import INTERPOLATIONS

SIDECAR_MARK = "evalbench_pretrain"  # marks the JSON that `evalbench pretrain` writes beside a checkpoint
RULE_KEYS = ("select", "rename", "skip_missing", "skip_unexpected")
CKPT_KEYS = ("name", "arch", "path", "init", "init_seed", "preprocessing", *RULE_KEYS, "rules", "trust_pickle", "meta",
             "pretrained_on")  # pretrained_on: the task the weights were pretrained on (transfer table), kept in meta
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
    select: Optional[str] = None  # candidate encoder of a multi-encoder file (None: the layout's default)
    rename: tuple[tuple[str, str], ...] = ()  # (regex, replacement) applied in order
    skip_unexpected: tuple[str, ...] = ()  # glob patterns of checkpoint tensors dropped on purpose
    trust_pickle: bool = False  # allow full unpickling (a file the user trusts)

    @property
    def load_rules(self) -> LoadRules:
        return LoadRules(select=self.select, rename=self.rename, skip_missing=self.skip_missing,
                         skip_unexpected=self.skip_unexpected)

    def rules_payload(self) -> dict:
        """The loading rules beyond ``skip_missing`` for the extract identity: empty when none are set, so
        entries without them keep the keys they had before rules existed."""
        extra = {k: v for k, v in self.load_rules.payload().items() if k != "skip_missing" and v}
        return {"load_rules": extra} if extra else {}

    @property
    def random_init(self) -> bool:
        return isinstance(self.weights, RandomWeights)

    @property
    def path(self) -> Optional[Path]:
        return self.weights.path if isinstance(self.weights, FileWeights) else None


def file_weights_identity(spec: CheckpointSpec, *, hash_file: HashFile) -> dict:
    path = spec.weights.path
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointError(
            f"checkpoint {spec.name!r}: file {path} {what}; fix `path:` in the suite "
            "(relative paths are relative to the suite file)")
    try:
        return {"sha256": hash_file(path)}
    except OSError as e:  # unreadable (permissions, an I/O error): this checkpoint's jobs fail, the run goes on
        raise CheckpointError(f"checkpoint {spec.name!r}: file {path} cannot be read ({e.strerror or e})") from None


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


def _rename_rules(value: Any, *, where: str) -> tuple[tuple[str, str], ...]:
    """``[{from: REGEX, to: REPLACEMENT}, ...]``, checked to compile."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {{from: REGEX, to: REPLACEMENT}}, e.g. "
                          "[{from: '^backbone\\.0\\.', to: 'conv1.'}]")
    rules = []
    for i, r in enumerate(value):
        d = check_mapping(r, where=f"{where}[{i}]", required=("from", "to"))
        if not isinstance(d["from"], str) or not isinstance(d["to"], str):
            raise ConfigError(f"{where}[{i}]: from and to must be strings (quote them in YAML)")
        check_rule(d["from"], d["to"], where=f"{where}[{i}]")
        rules.append((d["from"], d["to"]))
    return tuple(rules)


def parse_rules(d: Any, *, where: str) -> LoadRules:
    """The loading rules of a suite entry or of a rules file (keys ``RULE_KEYS``)."""
    d = {k: v for k, v in (d or {}).items() if k in RULE_KEYS}
    select = d.get("select")
    if select is not None and (not isinstance(select, str) or not select):
        raise ConfigError(f"{where}: select must be a candidate name, e.g. teacher, student, query, key, online")
    return LoadRules(select=select, rename=_rename_rules(d.get("rename", []), where=f"{where}: rename"),
                     skip_missing=_patterns(d.get("skip_missing", ()), where=f"{where}: skip_missing"),
                     skip_unexpected=_patterns(d.get("skip_unexpected", ()), where=f"{where}: skip_unexpected"))


def read_rules_file(path: Path) -> LoadRules:
    """A rules file (``evalbench inspect --write-rules``): select, rename, skip_missing, skip_unexpected."""
    where = str(path)
    return parse_rules(check_mapping(read_yaml(path) or {}, where=where, optional=RULE_KEYS), where=where)


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
    if "pretrained_on" in d:  # the transfer table's source (results/transfer.py); changes no number
        if not isinstance(d["pretrained_on"], str) or not d["pretrained_on"]:
            raise ConfigError(f"{where}: pretrained_on must be the name of the task the weights were pretrained on, "
                              f"got {d['pretrained_on']!r}")
        meta = {**meta, "pretrained_on": d["pretrained_on"]}
    rules = parse_rules(d, where=where)
    if "rules" in d:
        if not isinstance(d["rules"], str):
            raise ConfigError(f"{where}: rules must be the path of a rules file (evalbench inspect --write-rules)")
        file = Path(d["rules"]).expanduser()
        rules = read_rules_file(file if file.is_absolute() else base_dir / file).merged(rules)
    trust = d.get("trust_pickle", False)
    if not isinstance(trust, bool):
        raise ConfigError(f"{where}: trust_pickle must be true or false")
    return CheckpointSpec(
        name=str(d["name"]), arch=arch,
        data=parse_data_config(arch, d.get("preprocessing"), where=f"{where}: preprocessing"),
        weights=weights, skip_missing=rules.skip_missing, meta=dict(meta), select=rules.select, rename=rules.rename,
        skip_unexpected=rules.skip_unexpected, trust_pickle=trust,
    )
