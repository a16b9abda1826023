"""Data-parallel pretraining with torch.distributed (DESIGN.md §5): which shard this process is,
and the two collectives the methods need. No Ray here: ``run/train_ray.py`` starts the
processes (Ray Train's ``TorchTrainer``) and this module only sees an initialised process group.

Semantics, with W workers and a global batch B (each worker B / W images):
- gradients are averaged over workers (``DistributedDataParallel``);
- SimCLR's negatives are the whole global batch: the projections of every worker are gathered
  with :func:`gather_with_grad` (gradient flows back to the worker that made them), and every
  worker computes the same global NT-Xent; with DDP's averaging the update equals the
  single-process update on the global batch (the google-research/simclr and solo-learn design);
- MoCo enqueues the keys of every worker (:func:`gather`, as ``concat_all_gather`` in
  facebookresearch/moco), so all workers keep the same queue;
- BatchNorm statistics are per worker (``SyncBatchNorm`` is GPU-only in torch), and DDP
  broadcasts worker 0's buffers at each step, so the saved running statistics are worker 0's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's place among the data-parallel workers of one pretraining run."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every worker's copy and returns this worker's
    slice (solo-learn ``utils/misc.py`` ``GatherLayer``); all_reduce works on gloo and NCCL."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def gather_with_grad(x: Tensor) -> Tensor:
    """(N, ...) on each of W workers -> (W*N, ...), rows in worker order; identity outside DDP."""
    return _GatherWithGrad.apply(x) if active() else x


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """(N, ...) on each of W workers -> (W*N, ...) without gradient; identity outside DDP."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def mean_over_workers(value: Tensor) -> Tensor:
    """The mean of a scalar over the workers (every worker gets it); the value itself outside DDP."""
    if not active():
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
