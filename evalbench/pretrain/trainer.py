"""The pretraining loop: two augmented views per image, the method's loss, the optimiser and
schedule, and a resumable state every ``checkpoint_every`` epochs (DESIGN.md §5).

Determinism and resume: at the start of epoch e, torch's global RNG (augmentations) and the
shuffling generator are seeded from (seed, e) (and the worker's rank, data-parallel). A killed run resumes from its last saved epoch
with the model, optimiser, scheduler, queue and loss curve of that epoch, so on CPU it ends
with the same weights as an uninterrupted run with the same seed.

Data-parallel (``workers`` > 1, started by ``run/train_ray.py``): each process gets a ``Shard``;
the method is wrapped in ``DistributedDataParallel``, each worker reads its ``DistributedSampler``
share of every global batch (batch_size / workers images), the loss curve is the mean over
workers, and worker 0 saves the resumable state that every worker resumes from
(``pretrain/distributed.py`` has the semantics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from evalbench.core.atomic import atomic_path
from evalbench.core.errors import EvalbenchError
from evalbench.data.base import ImageSource
from evalbench.encoders import Encoder, build_encoder, preprocess
from evalbench.features.extract import MEMORY_FORMAT
from evalbench.pretrain.augment import build_augment, two_views
from evalbench.pretrain.config import PretrainConfig
from evalbench.pretrain.distributed import Shard, mean_over_workers
from evalbench.pretrain.methods import METHODS
from evalbench.pretrain.optim import build_optimizer, build_scheduler, param_groups

STATE_FILE = "state.pt"


class PretrainDiverged(EvalbenchError):
    """The loss became NaN or inf."""


@dataclass
class PretrainResult:
    encoder: Encoder
    loss_curve: list[float]  # mean loss per epoch
    epochs: int
    resumed_from: int  # epochs already done when this call started (0: from scratch)
    wall_s: float
    images_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63 - 1)


def _save_state(state_dir: Path, method: torch.nn.Module, opt: torch.optim.Optimizer, sched, *, epoch: int,
                step: int, curve: list[float]) -> None:
    state = {"method": method.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": epoch, "step": step, "curve": list(curve)}
    with atomic_path(state_dir / STATE_FILE) as tmp:
        torch.save(state, tmp)


def _load_state(state_dir: Path) -> Optional[dict]:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and numbers only


def _epoch_loader(source: ImageSource, cfg: PretrainConfig, epoch: int, shard: Shard) -> DataLoader:
    """One epoch's batches for this worker: the whole shuffled batch in one process, else this
    worker's ``DistributedSampler`` share (every worker shuffles with the same seed)."""
    seed = epoch_seed(cfg.seed, epoch) + 1
    if not shard.distributed:
        order = torch.Generator().manual_seed(seed)
        return DataLoader(source, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=order)
    sampler = DistributedSampler(source, num_replicas=shard.world_size, rank=shard.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    return DataLoader(source, batch_size=cfg.batch_size // shard.world_size, sampler=sampler, drop_last=True)


def pretrain(cfg: PretrainConfig, source: ImageSource, *, num_classes: int, state_dir: Optional[Path],
             device: torch.device, log: Callable[[str], None] = lambda s: None,
             stop_after: Optional[int] = None, shard: Shard = Shard()) -> PretrainResult:
    """Train ``cfg.method`` on ``source`` (a task's train split) and return the encoder.

    ``stop_after``: end this call after that many epochs in total (saving its state), as a
    time-limited job would; a later call with the same ``state_dir`` resumes from there.
    ``shard``: this process's rank among ``cfg.workers`` data-parallel workers (the process
    group must be initialised); only rank 0 writes the state.
    """
    if shard.world_size != cfg.workers:
        raise EvalbenchError(f"{cfg.method}: the config asks for {cfg.workers} data-parallel workers but this process "
                             f"is one of {shard.world_size}; workers > 1 runs through Ray Train (`evalbench sweep`/"
                             "`run` with the ray executor)")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.arch, in_chans=cfg.data.in_chans)
    # channels_last in one process; data-parallel keeps NCHW (DDP's gradient buckets with channels_last
    # parameters gave other updates than the one-process emulation: tests/run/test_train_ray.py)
    fmt = torch.contiguous_format if shard.distributed else MEMORY_FORMAT
    method = METHODS.get(cfg.method)(cfg, encoder, num_classes).to(device, memory_format=fmt)
    step_fn: torch.nn.Module = method
    opt = build_optimizer(cfg.optimizer, param_groups(method, cfg.optimizer.weight_decay))
    steps_per_epoch = len(source) // cfg.batch_size  # global batches (DistributedSampler: the same count)
    if steps_per_epoch < 1:
        raise EvalbenchError(f"batch_size {cfg.batch_size} is larger than the {len(source)} training images of "
                             f"task {cfg.task!r}; lower batch_size")
    sched = build_scheduler(opt, cfg.optimizer, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs)
    augment = build_augment(cfg.augment, size=cfg.data.input_size)
    start, step, curve = 0, 0, []
    state = _load_state(state_dir) if state_dir is not None else None
    if state is not None:
        method.load_state_dict(state["method"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, step, curve = int(state["epoch"]), int(state["step"]), [float(v) for v in state["curve"]]
        log(f"resumed at epoch {start} of {cfg.epochs}")
    if shard.distributed:  # after loading the state: DDP starts by broadcasting rank 0's weights
        step_fn = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    total = steps_per_epoch * cfg.epochs
    seen = 0
    for epoch in range(start, min(cfg.epochs, stop_after or cfg.epochs)):
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + shard.rank)  # augmentations
        loader = _epoch_loader(source, cfg, epoch, shard)
        method.train()
        losses = []
        for images, labels in loader:
            v1, v2 = two_views(augment, images)
            x1, x2 = (preprocess(v.to(device), cfg.data).contiguous(memory_format=fmt) for v in (v1, v2))
            loss = step_fn(x1, x2, labels.to(device))
            seen_loss = mean_over_workers(loss)  # every worker sees the same value: they stop together
            if not torch.isfinite(seen_loss):
                last = curve[-1] if curve else None
                raise PretrainDiverged(f"{cfg.method}: the loss became {seen_loss.item()} in epoch {epoch + 1} "
                                       f"(step {step + 1}); last finite epoch loss: {last}; lower lr or check the knobs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            method.after_step(step, total)
            step += 1
            seen += len(images) * shard.world_size  # images of the global batch
            losses.append(seen_loss.item())
        curve.append(sum(losses) / len(losses))
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {curve[-1]:.4f}")
        last = epoch + 1 == cfg.epochs or epoch + 1 == stop_after
        if state_dir is not None and shard.is_main and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
            _save_state(state_dir, method, opt, sched, epoch=epoch + 1, step=step, curve=curve)
    wall = time.perf_counter() - t0
    return PretrainResult(encoder.eval(), curve, len(curve), start, wall, images_per_s=seen / wall if wall else 0.0)

