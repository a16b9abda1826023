"""Protocols: versioned YAML (what, with which numbers) + a registered implementation (how).

``stochastic`` says whether the protocol's number depends on the seed: a deterministic one
(knn, linear on cached features) runs once whatever a suite's ``seeds`` say, and its table
cells carry no ±; a stochastic one runs once per seed. ``view`` names the extraction view
whose features it reads (identity: the images as they are).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import Field

from evalbench.core.errors import ConfigError
from evalbench.core.paths import PROTOCOLS_DIR
from evalbench.core.validate import Doc, Flag, Mapping_, Name, NonNegFloat, PositiveInt, Text, join_where, validate
from evalbench.core.yamlio import find_yaml, read_yaml, yaml_files
from evalbench.data.views import VIEWS
from evalbench.protocols import PARAMS, PROBES, TaskSizes

RESOURCE_KEYS = ("num_cpus", "num_gpus")


class ResourcesDoc(Doc):
    num_cpus: Annotated[float, Field(gt=0, le=1024, allow_inf_nan=False, description="a number in (0, 1024]")] = 1.0
    num_gpus: NonNegFloat = 0.0


class ProtocolDoc(Doc):
    """protocols/NAME.yaml as written (DESIGN.md §3)."""

    name: Name
    version: PositiveInt
    implementation: Name
    params: Mapping_
    stochastic: Flag
    view: Name = "identity"
    description: Text = ""
    source: Text = ""
    resources: Optional[ResourcesDoc] = None


PROTOCOL_KEYS_REQUIRED = tuple(k for k, f in ProtocolDoc.model_fields.items() if f.is_required())
PROTOCOL_KEYS_OPTIONAL = tuple(k for k, f in ProtocolDoc.model_fields.items() if not f.is_required())


def validate_params(implementation: str, params: dict, *, where: str) -> None:
    """The params against the implementation's typed model (PARAMS): the first bad one is a ConfigError."""
    if implementation not in PARAMS:
        raise ConfigError(f"{where}: probe implementation {implementation!r} registers no params model; register "
                          "a ProbeParams subclass in protocols.PARAMS beside the probe (DESIGN.md §12)")
    try:
        validate(PARAMS.get(implementation), params, where=where)
    except ConfigError as e:
        raise ConfigError(f"{e} (params of implementation {implementation!r})") from None


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
    source: str = ""  # the literature it follows
    file: str = ""  # the YAML file it was read from (for messages)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def with_params(self, overrides: dict[str, Any], *, where: str) -> "ProtocolSpec":
        """These params with ``overrides`` (a suite's ``params:``), validated; ``where`` names the entry."""
        unknown = [k for k in overrides if k not in self.params]
        if unknown:
            raise ConfigError(f"{join_where(where, ('params',))}: protocol {self.name!r} has no param {unknown[0]!r}; "
                              f"known: {', '.join(self.params)}")
        params = {**self.params, **overrides}
        validate_params(self.implementation, params, where=join_where(where, ("params",)))
        return replace(self, params=params)

    def check_sizes(self, sizes: TaskSizes) -> list[tuple[tuple, str]]:
        """(path inside the protocol entry, message) for each param the task is too small for."""
        model = PARAMS.get(self.implementation).model_validate(self.params)
        return [(("params", *loc), msg) for loc, msg in model.check_sizes(sizes)]

    def identity_payload(self) -> dict:
        """What fixes the protocol's numbers (not its description or resources)."""
        return {"name": self.name, "version": self.version, "implementation": self.implementation,
                "params": self.params, "view": self.view}


def _registered(registry: Any, name: str, *, where: str) -> None:
    try:
        registry.get(name)
    except KeyError as e:
        raise ConfigError(f"{where}: {e.args[0]}") from None


def parse_protocol(data: Any, *, source: Path) -> ProtocolSpec:
    where = str(source)
    d = validate(ProtocolDoc, data, where=where)
    _registered(PROBES, d.implementation, where=join_where(where, ("implementation",)))
    _registered(VIEWS, d.view, where=join_where(where, ("view",)))
    validate_params(d.implementation, d.params, where=join_where(where, ("params",)))
    r = d.resources or ResourcesDoc()
    return ProtocolSpec(
        name=d.name, version=d.version, implementation=d.implementation, params=dict(d.params),
        stochastic=d.stochastic, view=d.view, num_cpus=r.num_cpus, num_gpus=r.num_gpus,
        description=d.description, source=d.source, file=where,
    )


def builtin_protocol_files() -> dict[str, Path]:
    return yaml_files(PROTOCOLS_DIR)


def resolve_protocol(name_or_path: str) -> ProtocolSpec:
    """A built-in protocol name (protocols/NAME.yaml) or a path to a protocol YAML file."""
    path = find_yaml(name_or_path, PROTOCOLS_DIR, kind="protocol")
    return parse_protocol(read_yaml(path), source=path)
