"""Momentum (target / key) encoders and MoCo's negative queue (DESIGN.md §5).

``ema_update`` moves a target network towards the online one (BYOL's target, MoCo's key encoder),
``momentum_at`` is its momentum schedule, ``copy_for_target`` makes the target, and
``NegativeQueue`` is MoCo's ring buffer of past keys.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evalbench.core.errors import ConfigError
from evalbench.core.registry import Registry


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, *, momentum: float) -> None:
    """target_param <- m * target_param + (1 - m) * online_param, for every parameter, in place.

    He et al. 2020 / Chen et al. 2020 (MoCo v2): facebookresearch/moco ``moco/builder.py``
    ``_momentum_update_key_encoder``; Grill et al. 2020 (BYOL): deepmind-research
    ``byol/byol_experiment.py`` (target params update); lightly ``models/utils.py`` ``update_momentum``.

    Buffers (BatchNorm running statistics, ``num_batches_tracked``) are NOT touched: like MoCo's key
    encoder (whose loop runs over ``parameters()`` only) and lightly, the target keeps the running
    statistics of its own forward passes. Parameters are matched by name; a target whose parameter
    names or shapes differ from the online network's is an error, not a partial update.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"EMA momentum must be in [0, 1], got {momentum!r}")
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        diff = sorted(set(t_params) ^ set(o_params))
        raise ValueError(f"ema_update: target and online networks differ in parameters {diff[:5]}")
    for name, t in t_params.items():
        o = o_params[name]
        if t.shape != o.shape:
            raise ValueError(f"ema_update: parameter {name!r} is {tuple(t.shape)} in target, {tuple(o.shape)} in online")
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)


# name -> schedule(step, total_steps, base) -> momentum
MomentumSchedule = Callable[[int, int, float], float]
MOMENTUM_SCHEDULES: Registry[MomentumSchedule] = Registry("momentum schedule", "evalbench.pretrain.momentum.MOMENTUM_SCHEDULES")


@MOMENTUM_SCHEDULES.register("constant")
def _constant(step: int, total_steps: int, base: float) -> float:
    """MoCo: a fixed momentum (0.999 in facebookresearch/moco ``main_moco.py``)."""
    return base


@MOMENTUM_SCHEDULES.register("cosine")
def _cosine(step: int, total_steps: int, base: float) -> float:
    """BYOL: tau = 1 - (1 - base) * (cos(pi * k / K) + 1) / 2, base at step 0 and 1.0 at the end.

    Grill et al. 2020 §3.2; deepmind-research ``byol/utils/schedules.py`` ``target_ema``."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def momentum_at(step: int, total_steps: int, *, base: float, schedule: str) -> float:
    """The EMA momentum at ``step`` of ``total_steps`` (0 <= step <= total_steps) under ``schedule``.

    ConfigError for an unknown schedule (listing the known ones) or a base outside [0, 1].
    """
    try:
        fn = MOMENTUM_SCHEDULES.get(schedule)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    if not 0.0 <= base <= 1.0:
        raise ConfigError(f"momentum base must be in [0, 1], got {base!r}")
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"momentum_at: need 0 <= step <= total_steps and total_steps >= 1, got {step}/{total_steps}")
    return fn(step, total_steps, base)


def copy_for_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` (same weights, buffers and train/eval mode) with requires_grad False
    on every parameter: the starting target / key encoder (MoCo ``moco/builder.py`` ``__init__``)."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


class NegativeQueue(nn.Module):
    """MoCo's queue of negative keys: a ring buffer of ``size`` vectors of ``dim`` (He et al. 2020,
    Chen et al. 2020; facebookresearch/moco ``moco/builder.py`` ``queue`` / ``_dequeue_and_enqueue``).

    ``queue`` (size, dim) starts as L2-normalised standard-normal rows, as in MoCo (drawn from
    ``generator`` when given, else from the global RNG); ``ptr`` (0-dim long) is the next row to
    write. Both are buffers, so ``state_dict()`` carries them and a resumed run continues exactly.
    Unlike MoCo, any batch size works: writes wrap around the end (MoCo asserts size % N == 0).
    """

    queue: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ConfigError(f"negative queue: size and dim must be >= 1, got size={size}, dim={dim}")
        init = torch.randn(size, dim, generator=generator)        # (size, dim)
        self.register_buffer("queue", F.normalize(init, dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write the (N, dim) keys (detached, stored as given: the caller normalises) at ``ptr``,
        wrapping around the end, and advance ``ptr`` by N (mod size). The oldest rows are
        overwritten; with N > size only the last ``size`` keys remain, exactly as writing them one
        by one would leave the buffer."""
        if keys.ndim != 2 or keys.shape[1] != self.queue.shape[1]:
            raise ValueError(f"enqueue: keys must be (N, {self.queue.shape[1]}), got {tuple(keys.shape)}")
        n = keys.shape[0]
        rows = (int(self.ptr) + torch.arange(n, device=self.queue.device)) % self.size  # (N,) target rows
        keep = min(n, self.size)                                  # later keys overwrite earlier ones
        self.queue.index_copy_(0, rows[n - keep:], keys[n - keep:].detach().to(self.queue.dtype))
        self.ptr.fill_((int(self.ptr) + n) % self.size)

    def vectors(self) -> Tensor:
        """The (size, dim) negatives as a detached CLONE: the caller computes logits with it and then
        enqueues before backward, which would otherwise modify a tensor saved for the gradient
        (MoCo's ``self.queue.clone().detach()``)."""
        return self.queue.detach().clone()
