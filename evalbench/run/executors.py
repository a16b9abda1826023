"""Executors: run a plan's stages and hand each output to the driver as soon as it is ready.

``local`` runs in-process, in topological order (debugging). ``ray`` (default) submits every
stage as a Ray task whose arguments are the object refs of its upstream stages, so Ray
schedules the graph (no scheduler of our own); each task asks for its stage's CPUs (and GPUs,
where the cluster has any). Outputs are small: artifacts stay in the store and travel by
identity. Ray is imported only here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

from evalbench.core.registry import Registry
from evalbench.run.stages import Stage, StageOutput, WorkerContext
from evalbench.run.worker import run_stage


@dataclass(frozen=True)
class ExecOptions:
    storage: str  # the artifact store's root: a path every node sees
    address: Optional[str] = None  # Ray cluster address; None: embedded local Ray
    num_cpus: Optional[int] = None  # embedded Ray only
    object_store_mb: int = 512  # embedded Ray only


# (stages to run in topological order, outputs of upstream stages that need not run, options)
Executor = Callable[[list[Stage], dict[str, StageOutput], ExecOptions], Iterator[tuple[Stage, StageOutput]]]
EXECUTORS: Registry[Executor] = Registry("executor", "evalbench run --help")


@EXECUTORS.register("local")
def run_local(stages: list[Stage], done: dict[str, StageOutput], opts: ExecOptions) -> Iterator[tuple[Stage, StageOutput]]:
    outputs = dict(done)
    ctx = WorkerContext(storage=opts.storage)
    for stage in stages:
        out = outputs[stage.identity] = run_stage(stage, [outputs[d] for d in stage.deps], ctx)
        yield stage, out


def _init_ray(opts: ExecOptions) -> bool:
    """Join the cluster at opts.address, or start embedded local Ray. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if opts.address:
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=True, logging_level="WARNING")
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=opts.num_cpus, include_dashboard=False, object_store_memory=opts.object_store_mb << 20,
                 log_to_driver=True, logging_level="WARNING", configure_logging=True)
    return True


def _ray_stage(stage: Stage, ctx: WorkerContext, *upstream: StageOutput) -> StageOutput:
    """The Ray task: Ray resolved the upstream refs into their outputs before calling this."""
    import ray

    return run_stage(stage, list(upstream), replace(ctx, node=ray.get_runtime_context().get_node_id()))


@EXECUTORS.register("ray")
def run_ray(stages: list[Stage], done: dict[str, StageOutput], opts: ExecOptions) -> Iterator[tuple[Stage, StageOutput]]:
    import ray

    if not stages:
        return
    started = _init_ray(opts)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(_ray_stage)
        ctx = WorkerContext(storage=opts.storage)
        refs: dict[str, object] = {}
        pending: dict = {}
        for stage in stages:
            args = [refs[d] if d in refs else done[d] for d in stage.deps]  # refs: Ray waits for them
            ref = remote.options(num_cpus=stage.resources.num_cpus, num_gpus=stage.resources.num_gpus if has_gpu else 0,
                                 name=stage.label[:100]).remote(stage, ctx, *args)
            refs[stage.identity] = ref
            pending[ref] = stage
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            stage = pending.pop(ready[0])
            yield stage, _get(ready[0], stage)
    finally:
        if started:
            ray.shutdown()


def _get(ref, stage: Stage) -> StageOutput:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # worker died, or an upstream task did
        return StageOutput(stage.identity, "error",
                           error=f"Ray task failed: {type(e).__name__}: {str(e).splitlines()[0][:500]}")
