"""Protocols: versioned YAML (what, with which numbers) + a registered probe function (how).

A probe is a pure function ``(features, *, params, seed, device) -> ProbeResult``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from evalbench.errors import ConfigError
from evalbench.features import Features
from evalbench.paths import PROTOCOLS_DIR
from evalbench.registry import Registry
from evalbench.yamlio import check_mapping, find_yaml, read_yaml, yaml_files


@dataclass(frozen=True)
class ProbeResult:
    metrics: dict[str, float]  # the reported numbers, e.g. {"top1": 0.962}
    details: dict = field(default_factory=dict)  # chosen hyperparameters, curves


Probe = Callable[..., ProbeResult]
PROBES: Registry[Probe] = Registry("probe implementation", "evalbench list protocols")

PROTOCOL_KEYS_REQUIRED = ("name", "version", "implementation", "params")
PROTOCOL_KEYS_OPTIONAL = ("description", "source", "resources")
RESOURCE_KEYS = ("num_cpus", "num_gpus")


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    version: int
    implementation: str
    params: dict
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    description: str = ""
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def with_params(self, overrides: dict[str, Any], *, where: str) -> "ProtocolSpec":
        unknown = [k for k in overrides if k not in self.params]
        if unknown:
            raise ConfigError(f"{where}: protocol {self.name!r} has no param {unknown[0]!r}; known: {', '.join(self.params)}")
        return ProtocolSpec(**{**self.__dict__, "params": {**self.params, **overrides}})


def parse_protocol(data: Any, *, source: Path) -> ProtocolSpec:
    d = check_mapping(data, where=str(source), required=PROTOCOL_KEYS_REQUIRED, optional=PROTOCOL_KEYS_OPTIONAL)
    r = check_mapping(d.get("resources", {}), where=f"{source}: resources", optional=RESOURCE_KEYS)
    if d["implementation"] not in PROBES:
        PROBES.get(d["implementation"])  # raises, listing the known implementations
    return ProtocolSpec(
        name=str(d["name"]), version=int(d["version"]), implementation=str(d["implementation"]),
        params=dict(d["params"] or {}), num_cpus=float(r.get("num_cpus", 1)), num_gpus=float(r.get("num_gpus", 0)),
        description=str(d.get("description", "")), source=str(d.get("source", "")),
    )


def builtin_protocol_files() -> dict[str, Path]:
    return yaml_files(PROTOCOLS_DIR)


def resolve_protocol(name_or_path: str) -> ProtocolSpec:
    """A built-in protocol name (protocols/NAME.yaml) or a path to a protocol YAML file."""
    path = find_yaml(name_or_path, PROTOCOLS_DIR, kind="protocol")
    return parse_protocol(read_yaml(path), source=path)


def run_probe(spec: ProtocolSpec, features: Features, *, seed: int, device: torch.device) -> ProbeResult:
    return PROBES.get(spec.implementation)(features, params=spec.params, seed=seed, device=device)


from evalbench.probes import knn as _knn, linear as _linear  # noqa: E402,F401  (register the probes)
