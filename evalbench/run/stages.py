"""Stages: the nodes of a plan (DESIGN.md §2).

A stage has a kind, typed inputs (specs and the identities of upstream stages), one identity
(``core.identity.identity(kind, payload, version=kind.version)``) and its own resources. A
stage kind is registered with its code version, what it produces (an artifact in the store,
or a record the driver writes) and the function a worker runs. Kinds now: ``pretrain``
(config x data x seed -> checkpoint artifact), ``extract`` (checkpoint x task x view ->
features artifact), ``probe`` (features x protocol x seed -> record) and ``train`` (weights x task x
fine-tuning protocol x draw -> record).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional

from evalbench.core.registry import Registry

CHECKPOINT_FILE = "model.safetensors"  # a pretrain stage's checkpoint, in the store's checkpoint_dir(stage identity)


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class Stage:
    kind: str
    identity: str
    label: str  # for people: "checkpoint | task | protocol | seed"
    inputs: Mapping[str, Any]  # specs and plain values the kind's function reads
    deps: tuple[str, ...] = ()  # identities of upstream stages, whose outputs the function gets in this order
    resources: Resources = Resources()
    error: Optional[str] = None  # failed while planning (missing file, missing data): recorded, never run


@dataclass(frozen=True)
class StageOutput:
    """What a worker returns: small plain values, never arrays (artifacts live in the store)."""

    identity: str
    status: Literal["ok", "error"]
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    error: Optional[str] = None
    timing: dict = field(default_factory=dict)
    worker: dict = field(default_factory=dict)  # host, pid, node, device

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class WorkerContext:
    """What every stage function gets besides its inputs: where the artifact store is."""

    storage: str
    node: Optional[str] = None  # the Ray node id, where the executor knows it


StageFn = Callable[[Stage, list[StageOutput], WorkerContext], StageOutput]


@dataclass(frozen=True)
class StageKind:
    name: str
    version: int  # bump when this kind's output for the same inputs changes
    produces: Literal["artifact", "record"]
    run: StageFn


STAGE_KINDS: Registry[StageKind] = Registry("stage kind", "DESIGN.md §2")
