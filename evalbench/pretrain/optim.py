"""Optimisers and the learning-rate schedule of pretraining (DESIGN.md §5).

``OPTIMIZERS`` (registered where defined): ``sgd`` (momentum SGD), ``adamw`` (``momentum`` is
beta1) and ``lars`` (You et al. 2017, as SimCLR and BYOL use it). ``param_groups`` keeps biases
and BatchNorm / other 1-D parameters out of weight decay; ``LARS`` also keeps them out of the
layer-wise adaptation. ``build_scheduler``: linear warm-up from 0, then cosine to 0 or constant,
stepped once per optimiser step.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterable, Union

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from evalbench.core.errors import ConfigError
from evalbench.core.registry import Registry

if TYPE_CHECKING:  # config.py imports this module (for the registries' names)
    from evalbench.pretrain.config import OptimizerConfig

Params = Union[nn.Module, Iterable[torch.Tensor], Iterable[dict[str, Any]]]
OptimizerBuilder = Callable[["OptimizerConfig", Any], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer", "evalbench.pretrain.optim.OPTIMIZERS; DESIGN.md §5")
# schedule(t) -> lr factor, t in [0, 1] = progress through the steps after warm-up
LR_SCHEDULES: Registry[Callable[[float], float]] = Registry("lr schedule", "evalbench.pretrain.optim.LR_SCHEDULES")


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017), as in SimCLR
    (google-research/simclr ``lars_optimizer.py``, classic momentum) and BYOL (optax ``lars``):

        d = g + wd * w                                  (>1-D params only)
        d = d * eta * ||w|| / ||d||                     (>1-D params, when both norms are > 0)
        v = momentum * v + lr * d ;   w = w - v

    Biases and BatchNorm / LayerNorm (all 1-D) parameters get neither weight decay nor the trust
    ratio: plain momentum SGD (SimCLR and BYOL exclude ``bias`` and ``batch_normalization``).
    ``eta`` = 0.001, SimCLR's and BYOL's trust coefficient. The learning rate is inside the
    momentum buffer (TF's classic momentum), so a schedule changes the step at once.
    """

    def __init__(self, params: Any, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 1e-3) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS: need lr > 0, 0 <= momentum < 1, weight_decay >= 0, eta > 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:  # weights: decay + trust ratio; biases and norm params: neither
                    if wd:
                        d = d.add(p, alpha=wd)
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((w_norm > 0) & (d_norm > 0), eta * w_norm / d_norm, torch.ones_like(w_norm))
                    d = d.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(d, alpha=lr)
                p.sub_(buf)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` in two groups: >1-D weights with ``weight_decay``, and
    1-D ones (biases, BatchNorm/LayerNorm scales and shifts) with none, as SimCLR, BYOL and
    MoCo v3 do. Frozen parameters (an EMA target's) are left out; empty groups are dropped."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@OPTIMIZERS.register("sgd")
def _sgd(cfg: "OptimizerConfig", params: Any) -> torch.optim.Optimizer:
    """Momentum SGD (MoCo v2, SimSiam)."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(cfg: "OptimizerConfig", params: Any) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019) with beta1 = ``momentum``, beta2 = 0.999."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("lars")
def _lars(cfg: "OptimizerConfig", params: Any) -> torch.optim.Optimizer:
    """LARS (SimCLR, BYOL); see ``LARS``."""
    return LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_optimizer(cfg: "OptimizerConfig", params_or_groups: Params) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name`` over parameters, param groups (their own ``weight_decay`` wins),
    or a module (then ``param_groups(module, cfg.weight_decay)``). ConfigError for an unknown
    name, listing the known ones."""
    try:
        build = OPTIMIZERS.get(cfg.name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    params = param_groups(params_or_groups, cfg.weight_decay) if isinstance(params_or_groups, nn.Module) \
        else list(params_or_groups)
    return build(cfg, params)


@LR_SCHEDULES.register("cosine")
def _cosine(t: float) -> float:
    """Half a cosine from 1 to 0 (Loshchilov & Hutter 2017, no restarts; SimCLR, MoCo v2, BYOL, SimSiam)."""
    return 0.5 * (1.0 + math.cos(math.pi * t))


@LR_SCHEDULES.register("constant")
def _constant(t: float) -> float:
    return 1.0


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The multiplier of the base lr at optimiser step ``step`` (0-based):

        step < W:   step / W                                      (linear warm-up from 0; SimCLR, BYOL)
        step >= W:  schedule(min(1, (step - W) / (T - W)))        (cosine: 0.5 (1 + cos(pi t)))

    with W = warmup_steps, T = total_steps; cosine reaches 0 at step T.
    """
    if step < warmup_steps:
        return step / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return LR_SCHEDULES.get(schedule)(t)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: "OptimizerConfig", *, steps_per_epoch: int,
                    epochs: int) -> LambdaLR:
    """Per-step LambdaLR: ``lr_factor`` with W = warmup_epochs * steps_per_epoch and
    T = epochs * steps_per_epoch. Call ``scheduler.step()`` after every ``optimizer.step()``."""
    try:
        LR_SCHEDULES.get(cfg.schedule)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    if steps_per_epoch < 1 or epochs < 1 or not 0 <= cfg.warmup_epochs <= epochs:
        raise ValueError(f"build_scheduler: need steps_per_epoch >= 1 and 0 <= warmup_epochs <= epochs, got "
                         f"steps_per_epoch={steps_per_epoch}, epochs={epochs}, warmup_epochs={cfg.warmup_epochs}")
    warmup, total, schedule = cfg.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch, cfg.schedule

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup, total_steps=total, schedule=schedule)

    return LambdaLR(optimizer, factor)
