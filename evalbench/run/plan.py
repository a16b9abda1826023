"""The plan: a graph of stages, each with one identity (DESIGN.md §2, §7.5).

Every identity comes from :func:`evalbench.core.identity.identity` over a payload built here
from the specs, with the code version of the stage's kind:

- weights:  file -> content sha256 (memoised on path, size, mtime_ns); random -> seed;
            produced by a stage -> that stage's identity (known before the weights exist);
- extract:  weights, arch, preprocessing, skip patterns and loading rules (select, rename,
            skip_unexpected: only when set), task payload (loader, params,
            num_classes, version, split-file hash, data fingerprint), view;
- probe:    features identity, protocol (name, version, implementation, params, view), and the
            seed only where the protocol is stochastic;
- train:    weights, arch, preprocessing, skip patterns and loading rules (as extract), task payload,
            protocol, seed, and the labelled subset (fraction, draw = seed, the subsets file's hash).

A record's key is its probe stage's identity. Stages whose inputs cannot be read while
planning (a missing checkpoint file, data that is not there, an input size the model cannot
take) are planned with ``error`` set, under a key made of what is known, so the failure is
recorded once and the rest of the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from evalbench.core.errors import EvalbenchError
from evalbench.core.filehash import HashFile, sha256_file
from evalbench.core.identity import identity
from evalbench.core.registry import Registry
from evalbench.data.views import VIEWS
from evalbench.encoders import check_encoder
from evalbench.run import worker as _worker  # noqa: F401  (registers the stage kinds)
from evalbench.run.stages import STAGE_KINDS, Resources, Stage
from evalbench.specs.checkpoint import (CheckpointSpec, FileWeights, RandomWeights, StageWeights,
                                        file_weights_identity)
from evalbench.protocols.finetune import is_finetune
from evalbench.specs.protocol import ProtocolSpec
from evalbench.specs.subsets import subset_plan_payload
from evalbench.specs.suite import Suite
from evalbench.specs.task import TaskSpec, resolve_task, task_identity_payload
from evalbench.pretrain.config import PretrainConfig


@dataclass
class Plan:
    """Stages in topological order (every stage after the stages it depends on)."""

    stages: dict[str, Stage] = field(default_factory=dict)

    def add(self, stage: Stage) -> Stage:
        return self.stages.setdefault(stage.identity, stage)  # same identity = same work: planned once

    def records(self) -> list[Stage]:
        return [s for s in self.stages.values() if STAGE_KINDS.get(s.kind).produces == "record"]

    @property
    def keys(self) -> list[str]:
        return [s.identity for s in self.records()]


def stage_identity(kind: str, payload: dict) -> str:
    return identity(kind, payload, version=STAGE_KINDS.get(kind).version)


@dataclass
class PlanContext:
    """Per-plan memo: each task fingerprinted and each encoder checked once."""

    hash_file: HashFile = sha256_file
    plan: Plan = field(default_factory=Plan)
    _tasks: dict[str, tuple[Optional[dict], Optional[str]]] = field(default_factory=dict)

    def task_payload(self, task: TaskSpec) -> tuple[Optional[dict], Optional[str]]:
        key = str(task.source or task.ref)
        if key not in self._tasks:
            self._tasks[key] = _attempt(lambda: task_identity_payload(task, hash_file=self.hash_file))
        return self._tasks[key]


def _attempt(fn: Callable[[], Any]) -> tuple[Any, Optional[str]]:
    try:
        return fn(), None
    except EvalbenchError as e:
        return None, f"{type(e).__name__}: {e}"


# --- weights: what identifies a checkpoint's weights, by where they come from -----------------

WeightsPlanner = Callable[[CheckpointSpec, PlanContext], tuple[dict, Optional[str]]]  # -> (payload, upstream stage)
WEIGHTS_PLANNERS: dict[type, WeightsPlanner] = {
    FileWeights: lambda spec, ctx: (file_weights_identity(spec, hash_file=ctx.hash_file), None),
    RandomWeights: lambda spec, ctx: ({"random_init_seed": spec.weights.seed}, None),
}
# planners of stages that produce weights (StageWeights.kind -> (spec, ctx) -> Stage)
PRODUCERS: Registry[Callable[[CheckpointSpec, PlanContext], Stage]] = Registry("weights-producing stage", "DESIGN.md §2")


def _produced_weights(spec: CheckpointSpec, ctx: PlanContext) -> tuple[dict, Optional[str]]:
    stage = ctx.plan.add(PRODUCERS.get(spec.weights.kind)(spec, ctx))
    if stage.error:
        raise EvalbenchError(stage.error)
    return {"stage": stage.identity}, stage.identity


WEIGHTS_PLANNERS[StageWeights] = _produced_weights


@PRODUCERS.register("pretrain")
def plan_pretrain(spec: CheckpointSpec, ctx: PlanContext) -> Stage:
    """A checkpoint evalbench trains itself (SSL methods, the supervised reference): its identity is
    the hash of its full config and its training data, known before the weights exist."""
    cfg: PretrainConfig = spec.weights.inputs["config"]
    task = resolve_task(cfg.task)
    task_payload, error = ctx.task_payload(task)
    payload = {"config": cfg.as_dict(), "task": task_payload or {"unavailable": task.ref}}
    return Stage(kind="pretrain", identity=stage_identity("pretrain", payload), label=f"pretrain {spec.name}",
                 inputs={"config": cfg, "task": task, "task_payload": task_payload},
                 resources=_pretrain_resources(cfg), error=error)


def _pretrain_resources(cfg: PretrainConfig) -> Resources:
    """One CPU (and one GPU where the cluster has them); a data-parallel point's stage only starts
    its Ray Train workers, which ask for theirs (run/train_ray.py)."""
    return Resources(num_cpus=1, num_gpus=1) if cfg.workers == 1 else Resources(num_cpus=0, num_gpus=0)


# --- the suite plan ---------------------------------------------------------------------------


def _weights(spec: CheckpointSpec, ctx: PlanContext) -> tuple[Optional[dict], Optional[str], Optional[str]]:
    """(weights payload, upstream stage identity, error)."""
    result, err = _attempt(lambda: WEIGHTS_PLANNERS[type(spec.weights)](spec, ctx))
    payload, upstream = result if result is not None else (None, None)
    if err is None and spec.data.input_size is not None:
        _, err = _attempt(lambda: check_encoder(spec.arch, spec.data))
    return payload, upstream, err


def _unavailable(spec: CheckpointSpec) -> dict:
    return {"unavailable": {"name": spec.name, "path": str(spec.path) if spec.path else None}}


def plan_extract(spec: CheckpointSpec, task: TaskSpec, view: str, ctx: PlanContext, *, amp: bool = False) -> Stage:
    weights, upstream, werr = _weights(spec, ctx)
    task_payload, terr = ctx.task_payload(task)
    v = VIEWS.get(view)
    payload = {"weights": weights or _unavailable(spec), "arch": spec.arch, "data": spec.data.as_dict(),
               "skip_missing": list(spec.skip_missing), "task": task_payload or {"unavailable": task.ref},
               "view": {"name": view, "version": v.version}, "amp": amp, **spec.rules_payload()}
    return ctx.plan.add(Stage(
        kind="extract", identity=stage_identity("extract", payload), label=f"{spec.name} | {task.name} | features[{view}]",
        inputs={"checkpoint": spec, "task": task, "view": view, "amp": amp, "weights": weights,
                "task_payload": task_payload},
        deps=(upstream,) if upstream else (), resources=Resources(num_cpus=1, num_gpus=1), error=werr or terr))


def plan_probe(extract: Stage, protocol: ProtocolSpec, seed: Optional[int], ctx: PlanContext) -> Stage:
    payload = {"features": extract.identity, "protocol": protocol.identity_payload(), "seed": seed}
    spec: CheckpointSpec = extract.inputs["checkpoint"]
    task: TaskSpec = extract.inputs["task"]
    label = f"{spec.name} | {task.name} | {protocol.name}" + (f" | seed {seed}" if seed is not None else "")
    return ctx.plan.add(Stage(
        kind="probe", identity=stage_identity("probe", payload), label=label,
        inputs={"checkpoint": spec, "task": task, "protocol": protocol, "seed": seed, "features": extract.identity,
                "weights": extract.inputs["weights"], "task_payload": extract.inputs["task_payload"]},
        deps=(extract.identity,), resources=Resources(protocol.num_cpus, protocol.num_gpus), error=extract.error))


def plan_train(spec: CheckpointSpec, task: TaskSpec, protocol: ProtocolSpec, seed: Optional[int],
               ctx: PlanContext) -> Stage:
    """A fine-tuning protocol: one `train` stage (checkpoint x task x protocol x draw -> record) that
    depends on the checkpoint's weights (its pretrain stage for StageWeights), not on features."""
    weights, upstream, werr = _weights(spec, ctx)
    task_payload, terr = ctx.task_payload(task)
    subset, serr = _attempt(lambda: subset_plan_payload(task, fraction=protocol.params["label_fraction"],
                                                        draw=seed or 0))
    payload = {"weights": weights or _unavailable(spec), "arch": spec.arch, "data": spec.data.as_dict(),
               "skip_missing": list(spec.skip_missing), "task": task_payload or {"unavailable": task.ref},
               "protocol": protocol.identity_payload(), "seed": seed, "subset": subset, **spec.rules_payload()}
    label = f"{spec.name} | {task.name} | {protocol.name}" + (f" | seed {seed}" if seed is not None else "")
    return ctx.plan.add(Stage(
        kind="train", identity=stage_identity("train", payload), label=label,
        inputs={"checkpoint": spec, "task": task, "protocol": protocol, "seed": seed, "features": None,
                "weights": weights, "task_payload": task_payload},
        deps=(upstream,) if upstream else (), resources=Resources(protocol.num_cpus, protocol.num_gpus),
        error=werr or terr or serr))


def plan_suite(suite: Suite, *, hash_file: HashFile = sha256_file) -> Plan:
    """Stages for every (checkpoint, task, protocol, seed); a deterministic protocol once; a fine-tuning
    protocol as `train` stages instead of extract + probe."""
    ctx = PlanContext(hash_file=hash_file)
    for spec in suite.checkpoints:
        for task in suite.tasks:
            for protocol in suite.protocols:
                if is_finetune(protocol.implementation):
                    for seed in (suite.seeds if protocol.stochastic else (None,)):
                        plan_train(spec, task, protocol, seed, ctx)
                    continue
                extract = plan_extract(spec, task, protocol.view, ctx, amp=suite.amp)
                for seed in (suite.seeds if protocol.stochastic else (None,)):
                    plan_probe(extract, protocol, seed, ctx)
    return ctx.plan
