"""Data-parallel pretraining through Ray Train (DESIGN.md §5): a point with ``workers: N`` > 1
runs ``pretrain()`` in N Ray Train workers (``TorchTrainer``; gloo on CPU, NCCL on GPUs).

Each worker trains its ``Shard``; worker 0 writes the resumable state (the pretrain stage's
state directory, which every worker reads on a restart, so a retried or killed run resumes from
its last saved epoch) and, at the end, the weights and the result beside it, which the calling
stage reads back. Ray is imported here and in ``executors.py`` only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from evalbench.core.atomic import atomic_path, write_json
from evalbench.core.errors import EvalbenchError
from evalbench.encoders import build_encoder
from evalbench.pretrain.config import PretrainConfig
from evalbench.pretrain.distributed import Shard
from evalbench.pretrain.trainer import PretrainResult, pretrain
from evalbench.specs.task import TaskSpec, load_task

FINAL = "final"  # under the state directory: worker 0's weights and result
MAX_FAILURES = 1  # Ray Train restarts the workers once; they resume from the saved state


def _train_loop(config: dict) -> None:
    """One Ray Train worker."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    shard = Shard(rank=ctx.get_world_rank(), world_size=ctx.get_world_size())
    cfg: PretrainConfig = config["cfg"]
    task: TaskSpec = config["task"]
    state_dir = Path(config["state_dir"])
    torch.set_num_threads(config["threads"])
    result = pretrain(cfg, load_task(task).train, num_classes=task.num_classes, state_dir=state_dir,
                      device=ray.train.torch.get_device(), shard=shard, stop_after=config.get("stop_after"))
    if shard.is_main and result.epochs == cfg.epochs:
        with atomic_path(state_dir / FINAL) as tmp:
            tmp.mkdir()
            save_file({k: v.detach().cpu().contiguous() for k, v in result.encoder.model.state_dict().items()},
                      str(tmp / "model.safetensors"))
            write_json(tmp / "result.json", {"loss_curve": result.loss_curve, "epochs": result.epochs,
                                             "resumed_from": result.resumed_from, "wall_s": result.wall_s,
                                             "images_per_s": result.images_per_s})


def _worker_error(e: Exception) -> Exception:
    """The first worker's own exception (a PretrainDiverged stays one), else a plain summary."""
    failures = getattr(e, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        while cause is not None and not isinstance(cause, EvalbenchError):
            cause = cause.__cause__
        if cause is not None:
            return cause
    first = next((str(f).strip().splitlines()[-1] for f in failures.values() if str(f).strip()), None)
    return EvalbenchError(f"data-parallel training failed: {first or str(e).strip().splitlines()[0]}")


def fit_data_parallel(cfg: PretrainConfig, task: TaskSpec, *, state_dir: Path, threads: int = 1,
                      stop_after: Optional[int] = None) -> Optional[PretrainResult]:
    """Run ``cfg.workers`` Ray Train workers on the connected Ray cluster; return worker 0's result.

    ``stop_after``: end after that many epochs in total (the state saved), as a time-limited job
    would; returns None then, and a later call with the same ``state_dir`` resumes from there."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        raise EvalbenchError(f"{cfg.method}: workers: {cfg.workers} trains data-parallel through Ray Train, which needs "
                             "Ray: use the ray executor (the default; not --executor local)")
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    state_dir.mkdir(parents=True, exist_ok=True)
    per_worker = {"CPU": threads, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "task": task, "state_dir": str(state_dir), "threads": threads,
                           "stop_after": stop_after},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(name="ray-train", storage_path=str(state_dir.resolve()),
                             failure_config=FailureConfig(max_failures=MAX_FAILURES)))
    final = state_dir / FINAL
    try:
        if not (final / "result.json").is_file():  # else: trained already, the stage stopped before storing it
            trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray Train wraps the workers' errors
        raise _worker_error(e) from None
    if stop_after is not None and stop_after < cfg.epochs:
        return None
    if not (final / "result.json").is_file():
        raise EvalbenchError(f"data-parallel training ended without worker 0's weights in {final}")
    meta = json.loads((final / "result.json").read_text())
    encoder = build_encoder(cfg.arch, in_chans=cfg.data.in_chans)
    encoder.model.load_state_dict(load_file(str(final / "model.safetensors")), strict=True)
    return PretrainResult(encoder.eval(), [float(v) for v in meta["loss_curve"]], int(meta["epochs"]),
                          int(meta["resumed_from"]), float(meta["wall_s"]), float(meta["images_per_s"]),
                          notes=[f"data-parallel: {cfg.workers} Ray Train workers"])
