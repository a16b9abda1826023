"""Executors: run a plan's stages and hand each output to the driver as soon as it is ready.

``local`` runs in-process, in topological order (debugging). ``ray`` (default) submits every
stage as a Ray task whose arguments are the object refs of its upstream stages, so Ray
schedules the graph (no scheduler of our own); each task asks for its stage's CPUs (and GPUs,
where the cluster has any). Outputs are small: artifacts stay in the store and travel by
identity. Ray is imported only here.

Before any work, ``check_options`` resolves the cluster address (``--address``, else the
``RAY_ADDRESS`` environment variable) and refuses options that would be ignored (``--num-cpus``
with a cluster), and ``check_reachable`` makes sure something answers at that address within
``CONNECT_TIMEOUT_S`` (Ray itself retries an address where nothing listens for many minutes).

Failures: a stage whose worker process dies (killed, out of memory, a crash in native code) is
retried by Ray up to ``max_retries`` times; when they are used up its output says so
(``details.retries``), and a stage downstream of it reports the upstream failure, not its own.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

from evalbench.core.errors import PreflightError, plain_message
from evalbench.core.registry import Registry
from evalbench.run.stages import Stage, StageOutput, WorkerContext

CONNECT_TIMEOUT_S = 10.0  # a cluster address that does not answer within this is an error, not a hang
MAX_RETRIES = 3  # Ray re-runs a stage whose worker process died this many times (Ray's default)


@dataclass(frozen=True)
class ExecOptions:
    storage: str  # the artifact store's root: a path every node sees
    address: Optional[str] = None  # Ray cluster address; None: embedded local Ray
    num_cpus: Optional[int] = None  # embedded Ray only
    object_store_mb: int = 512  # embedded Ray only
    address_from: str = "--address"  # where the address came from (--address or RAY_ADDRESS), for messages
    max_retries: int = MAX_RETRIES  # Ray retries of a stage whose worker process died


# (stages to run in topological order, outputs of upstream stages that need not run, options)
Executor = Callable[[list[Stage], dict[str, StageOutput], ExecOptions], Iterator[tuple[Stage, StageOutput]]]
EXECUTORS: Registry[Executor] = Registry("executor", "evalbench run --help")


@EXECUTORS.register("local")
def run_local(stages: list[Stage], done: dict[str, StageOutput], opts: ExecOptions) -> Iterator[tuple[Stage, StageOutput]]:
    from evalbench.run.worker import run_stage  # the workers' imports (torchvision, timm): not the driver's

    outputs = dict(done)
    ctx = WorkerContext(storage=opts.storage)
    for stage in stages:
        out = outputs[stage.identity] = run_stage(stage, [outputs[d] for d in stage.deps], ctx)
        yield stage, out


# --- preflight: before Ray starts -------------------------------------------------------------


def check_options(executor: str, opts: ExecOptions, *, environ: Optional[dict] = None) -> ExecOptions:
    """The options with the cluster address resolved (``--address``, else ``RAY_ADDRESS``); a
    PreflightError for a combination that would be ignored silently."""
    environ = os.environ if environ is None else environ
    if executor != "ray":
        given = [flag for flag, v in (("--address", opts.address), ("--num-cpus", opts.num_cpus)) if v is not None]
        if given:
            raise PreflightError(f"{' and '.join(given)} apply to --executor ray only; drop them or use --executor ray")
        return opts
    if opts.num_cpus is not None and opts.num_cpus < 1:
        raise PreflightError(f"--num-cpus {opts.num_cpus}: give at least 1 CPU")
    address, source = opts.address, "--address"
    if not address and environ.get("RAY_ADDRESS"):
        address, source = environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if address and opts.num_cpus is not None:
        unset = "; or unset RAY_ADDRESS to run embedded local Ray" if source == "RAY_ADDRESS" else ""
        raise PreflightError(f"--num-cpus applies to embedded local Ray only, but the run joins the Ray cluster at "
                             f"{address} ({source}), whose CPUs are its own: drop --num-cpus{unset}")
    return replace(opts, address=address or None, address_from=source)


def _host_port(address: str) -> Optional[tuple[str, int]]:
    """(host, port) of "host:port" or "ray://host:port"; None for "auto"/"local" (Ray finds those itself)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep:
        if rest in ("auto", "local"):
            return None
        raise PreflightError(f"Ray address {address!r} ({'RAY_ADDRESS' if address == os.environ.get('RAY_ADDRESS') else '--address'}) "
                             "is not HOST:PORT (e.g. 10.0.0.5:6379, or ray://HOST:10001 for Ray Client)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise PreflightError(f"Ray address {address!r}: port {port!r} is not a port number (1-65535)")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(opts: ExecOptions, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A PreflightError unless something accepts connections at the cluster address within ``timeout``."""
    if not opts.address:
        return
    target = _host_port(opts.address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__).lower()
        raise PreflightError(
            f"no Ray cluster answers at {opts.address} ({opts.address_from}): {why} within {timeout:g} s; start one "
            f"there with `ray start --head --port={target[1]}`, or fix {opts.address_from}"
            + ("" if opts.address_from == "--address" else " (unset it to run embedded local Ray)")) from None


def _init_ray(opts: ExecOptions) -> bool:
    """Join the cluster at opts.address, or start embedded local Ray. True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if opts.address:
            # Ray retries an address that accepts connections but is no cluster for many minutes: a few seconds here
            wait = os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "2")
            try:
                ray.init(address=opts.address, include_dashboard=False, log_to_driver=True, logging_level="WARNING")
            finally:
                if wait == "2" and os.environ.get("RAY_gcs_server_port_wait_time_s") == "2":
                    del os.environ["RAY_gcs_server_port_wait_time_s"]
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            env_address = os.environ.pop("RAY_ADDRESS", None)  # check_options made it opts.address, or it is unset
            try:
                ray.init(num_cpus=opts.num_cpus, include_dashboard=False, object_store_memory=opts.object_store_mb << 20,
                         log_to_driver=True, logging_level="WARNING", configure_logging=True)
            finally:
                if env_address is not None:
                    os.environ["RAY_ADDRESS"] = env_address
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = f"the Ray cluster at {opts.address} ({opts.address_from})" if opts.address else "embedded local Ray"
        raise PreflightError(f"could not start or join {where}: {plain_message(e, limit=400)}") from None
    return True


def _ray_stage(stage: Stage, ctx: WorkerContext, *upstream: StageOutput) -> StageOutput:
    """The Ray task: Ray resolved the upstream refs into their outputs before calling this."""
    import ray

    from evalbench.run.worker import run_stage

    return run_stage(stage, list(upstream), replace(ctx, node=ray.get_runtime_context().get_node_id()))


@EXECUTORS.register("ray")
def run_ray(stages: list[Stage], done: dict[str, StageOutput], opts: ExecOptions) -> Iterator[tuple[Stage, StageOutput]]:
    import ray

    if not stages:  # nothing to run: Ray is not started at all
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
                                 name=stage.label[:100], max_retries=opts.max_retries).remote(stage, ctx, *args)
            refs[stage.identity] = ref
            pending[ref] = stage
        outputs: dict[str, StageOutput] = dict(done)
        by_identity = {stage.identity: ref for ref, stage in pending.items()}

        def finish(ref) -> Iterator[tuple[Stage, StageOutput]]:
            stage = pending.pop(ref)
            for d in stage.deps:  # a failed upstream stage is reported first, so this one can name it
                if by_identity.get(d) in pending:
                    yield from finish(by_identity[d])
            outputs[stage.identity] = out = _get(ref, stage, outputs, opts)
            yield stage, out

        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            yield from finish(ready[0])
    finally:
        if started:
            ray.shutdown()


def _get(ref, stage: Stage, outputs: dict[str, StageOutput], opts: ExecOptions) -> StageOutput:
    """The stage's output; a Ray failure becomes an error output that names the stage that failed."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        failed = next((outputs[d] for d in stage.deps if d in outputs and not outputs[d].ok), None)
        if failed is not None:  # an upstream stage failed and Ray could not compute this stage's inputs
            return StageOutput(stage.identity, "error", error=failed.error, details=dict(failed.details))
        cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None else e
        crashed = isinstance(cause, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                     ray.exceptions.OutOfMemoryError))
        if crashed:
            retries = f"{opts.max_retries} retr{'y' if opts.max_retries == 1 else 'ies'}"
            why = (f"the Ray worker running it died ({type(cause).__name__}: {plain_message(cause, limit=300)}) "
                   f"and Ray's {retries} of it {'is' if opts.max_retries == 1 else 'are'} used up")
        else:
            why = f"Ray could not run it ({type(cause).__name__}: {plain_message(cause, limit=500)})"
        return StageOutput(stage.identity, "error", error=f"{stage.kind} failed: {why}",
                           details={"retries": opts.max_retries if crashed else 0})
