"""Executors: run planned jobs and hand each outcome to the driver as soon as it is ready.

``local`` runs in-process (debugging); ``ray`` (default) runs one extraction task per
(checkpoint, task) and one probe task per job, the probes depending on the extraction's
object ref, so all frozen protocols of a group share one extraction. Ray is imported only here.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from evalbench.registry import Registry
from evalbench.suite import Job
from evalbench.worker import FeaturesOutcome, JobOutcome, extract_features, probe_job


@dataclass(frozen=True)
class ExecOptions:
    cache_dir: Optional[str]
    address: Optional[str] = None  # Ray cluster address; None: embedded local Ray
    num_cpus: Optional[int] = None  # embedded Ray only
    object_store_mb: int = 1024  # embedded Ray only


Executor = Callable[[list[Job], ExecOptions], Iterator[tuple[Job, JobOutcome]]]
EXECUTORS: Registry[Executor] = Registry("executor", "evalbench run --help")


def groups(jobs: list[Job]) -> dict[tuple[str, str], list[Job]]:
    out: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for j in jobs:
        out[j.group].append(j)
    return out


@EXECUTORS.register("local")
def run_local(jobs: list[Job], opts: ExecOptions) -> Iterator[tuple[Job, JobOutcome]]:
    for group in groups(jobs).values():
        first = group[0]
        feats = extract_features(first.checkpoint, first.task, ckpt_id=first.ckpt_id, cache_dir=opts.cache_dir)
        for job in group:
            yield job, probe_job(feats, job.protocol, seed=job.seed)


def _init_ray(opts: ExecOptions) -> bool:
    """Join the cluster at opts.address, or start embedded local Ray. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if opts.address:
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=True)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=opts.num_cpus, include_dashboard=False, object_store_memory=opts.object_store_mb << 20,
                 log_to_driver=True, logging_level="WARNING", configure_logging=True)
    return True


@EXECUTORS.register("ray")
def run_ray(jobs: list[Job], opts: ExecOptions) -> Iterator[tuple[Job, JobOutcome]]:
    import ray

    started = _init_ray(opts)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        extract_remote = ray.remote(extract_features)
        probe_remote = ray.remote(probe_job)
        pending: dict = {}
        for group in groups(jobs).values():
            first = group[0]
            cpus = max(j.protocol.num_cpus for j in group)
            gpus = max(j.protocol.num_gpus for j in group) if has_gpu else 0
            feats_ref = extract_remote.options(num_cpus=cpus, num_gpus=gpus, name=f"features {first.group}").remote(
                first.checkpoint, first.task, ckpt_id=first.ckpt_id, cache_dir=opts.cache_dir)
            for job in group:
                ref = probe_remote.options(num_cpus=job.protocol.num_cpus, num_gpus=job.protocol.num_gpus if has_gpu else 0,
                                           name=job.label).remote(feats_ref, job.protocol, seed=job.seed)
                pending[ref] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            yield job, _get(done[0])
    finally:
        if started:
            ray.shutdown()


def _get(ref) -> JobOutcome:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # worker died, task crashed outside our handlers
        return JobOutcome("error", {}, {}, f"Ray task failed: {type(e).__name__}: {str(e).splitlines()[0][:500]}", {}, {})
