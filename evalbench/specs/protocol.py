"""Protocols: versioned YAML (what, with which numbers) + a registered implementation (how).

``stochastic`` says whether the protocol's number depends on the seed: a deterministic one
(knn, linear on cached features) runs once whatever a suite's ``seeds`` say, and its table
cells carry no ±; a stochastic one runs once per seed. ``view`` names the extraction view
whose features it reads (identity: the images as they are).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evalbench.core.errors import ConfigError
from evalbench.core.paths import PROTOCOLS_DIR
from evalbench.core.yamlio import check_mapping, find_yaml, read_yaml, yaml_files
from evalbench.data.views import VIEWS
from evalbench.protocols import PROBES

PROTOCOL_KEYS_REQUIRED = ("name", "version", "implementation", "params", "stochastic")
PROTOCOL_KEYS_OPTIONAL = ("description", "source", "resources", "view")
RESOURCE_KEYS = ("num_cpus", "num_gpus")


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    version: int
    implementation: str
    params: dict
    stochastic: bool
    view: str = "identity"
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
        return replace(self, params={**self.params, **overrides})

    def identity_payload(self) -> dict:
        """What fixes the protocol's numbers (not its description or resources)."""
        return {"name": self.name, "version": self.version, "implementation": self.implementation,
                "params": self.params, "view": self.view}


def parse_protocol(data: Any, *, source: Path) -> ProtocolSpec:
    d = check_mapping(data, where=str(source), required=PROTOCOL_KEYS_REQUIRED, optional=PROTOCOL_KEYS_OPTIONAL)
    r = check_mapping(d.get("resources") or {}, where=f"{source}: resources", optional=RESOURCE_KEYS)
    PROBES.get(str(d["implementation"]))  # raises, listing the known implementations
    view = str(d.get("view", "identity"))
    VIEWS.get(view)
    if not isinstance(d["stochastic"], bool):
        raise ConfigError(f"{source}: stochastic must be true or false (does the number depend on the seed?)")
    return ProtocolSpec(
        name=str(d["name"]), version=int(d["version"]), implementation=str(d["implementation"]),
        params=dict(d["params"] or {}), stochastic=d["stochastic"], view=view,
        num_cpus=float(r.get("num_cpus", 1)), num_gpus=float(r.get("num_gpus", 0)),
        description=str(d.get("description", "")), source=str(d.get("source", "")),
    )


def builtin_protocol_files() -> dict[str, Path]:
    return yaml_files(PROTOCOLS_DIR)


def resolve_protocol(name_or_path: str) -> ProtocolSpec:
    """A built-in protocol name (protocols/NAME.yaml) or a path to a protocol YAML file."""
    path = find_yaml(name_or_path, PROTOCOLS_DIR, kind="protocol")
    return parse_protocol(read_yaml(path), source=path)
