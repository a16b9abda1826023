"""Optimisers and the lr schedule: LARS equals a hand computation of You et al. / SimCLR's update,
1-D parameters get no weight decay (nor LARS adaptation), the schedule follows its formula, and
an unknown optimiser fails listing the known ones."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.pretrain.config import OptimizerConfig
from evalbench.pretrain.optim import (LARS, LR_SCHEDULES, OPTIMIZERS, build_optimizer, build_scheduler, lr_factor,
                                      param_groups)


def ocfg(name: str = "sgd", **over) -> OptimizerConfig:
    d = {"name": name, "lr": 0.1, "weight_decay": 0.01, "momentum": 0.9, "warmup_epochs": 0, "schedule": "cosine"}
    d.update(over)
    return OptimizerConfig(**d)


def test_optim__lars_update_equals_a_hand_computation():
    w0 = [[1.0, 2.0], [3.0, 4.0]]
    g0 = [[0.5, -1.0], [0.0, 2.0]]
    w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    b = nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))  # 1-D: no decay, no adaptation
    lr, m, wd, eta = 0.5, 0.9, 0.1, 0.01
    opt = LARS([w, b], lr=lr, momentum=m, weight_decay=wd, eta=eta)

    # by hand, in plain Python: d = g + wd w; trust = eta |w| / |d|; v = m v + lr trust d; w -= v
    def norm(a):
        return math.sqrt(sum(x * x for row in a for x in row))

    ww, v, bb, vb = [r[:] for r in w0], [[0.0] * 2 for _ in range(2)], [1.0, -1.0], [0.0, 0.0]
    for _ in range(2):  # two steps: the momentum buffer carries over
        w.grad = torch.tensor(g0, dtype=torch.float64)
        b.grad = torch.tensor([0.25, 0.5], dtype=torch.float64)
        opt.step()
        d = [[g0[i][j] + wd * ww[i][j] for j in range(2)] for i in range(2)]
        trust = eta * norm(ww) / norm(d)
        v = [[m * v[i][j] + lr * trust * d[i][j] for j in range(2)] for i in range(2)]
        ww = [[ww[i][j] - v[i][j] for j in range(2)] for i in range(2)]
        vb = [m * vb[k] + lr * gb for k, gb in enumerate([0.25, 0.5])]
        bb = [bb[k] - vb[k] for k in range(2)]
    torch.testing.assert_close(w.detach(), torch.tensor(ww, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.detach(), torch.tensor(bb, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_optim__lars_trust_ratio_is_one_for_zero_weights():
    w = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), -torch.ones(2, 2))  # plain SGD step, not 0 * inf


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)  # an EMA target's params: not optimised


def test_optim__param_groups_exclude_1d_params_from_decay_and_frozen_ones_altogether():
    model = Tiny()
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.conv.weight), id(model.fc.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.conv.bias), id(model.bn.weight), id(model.bn.bias),
                                                   id(model.fc.bias)}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS.names()))
def test_optim__excluded_params_get_no_weight_decay(name):
    """With zero gradients, only weight decay moves a parameter: weights shrink, 1-D params stay."""
    model = Tiny()
    opt = build_optimizer(ocfg(name, lr=0.1, weight_decay=0.5), param_groups(model, 0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    for n, p in model.named_parameters():
        if p.ndim == 1 or not p.requires_grad:
            torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0, msg=n)
        else:
            assert p.detach().norm() < before[n].norm(), n


def test_optim__build_optimizer_reads_the_config():
    model = Tiny()
    sgd = build_optimizer(ocfg("sgd", lr=0.2, momentum=0.8), model)  # a module: param_groups applied
    assert sgd.param_groups[0]["lr"] == 0.2 and sgd.param_groups[0]["momentum"] == 0.8
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.01, 0.0]
    adamw = build_optimizer(ocfg("adamw", momentum=0.8), model.parameters())
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.999)
    assert isinstance(build_optimizer(ocfg("lars"), model), LARS)


def test_optim__unknown_optimizer_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'; known: adamw, lars, sgd"):
        build_optimizer(ocfg("adam"), Tiny())


def lrs(cfg: OptimizerConfig, *, steps_per_epoch: int, epochs: int) -> list[float]:
    """The lr of every optimiser step 0..T (T = the step after the last one)."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch=steps_per_epoch, epochs=epochs)
    out = []
    for _ in range(steps_per_epoch * epochs + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_optim__warmup_then_cosine_follows_the_formula():
    base, spe, epochs, warm = 0.4, 10, 5, 1
    got = lrs(ocfg(lr=base, warmup_epochs=warm, schedule="cosine"), steps_per_epoch=spe, epochs=epochs)
    W, T = warm * spe, epochs * spe
    assert got[0] == 0.0                                          # warm-up starts from 0
    assert got[5] == pytest.approx(base * 5 / W)                  # linear
    assert got[W] == pytest.approx(base)                          # end of warm-up: the peak
    mid = W + (T - W) // 2
    assert got[mid] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * (mid - W) / (T - W))))
    assert got[mid] == pytest.approx(base / 2)                    # half way through the cosine
    assert got[T] == pytest.approx(0.0, abs=1e-12)                # the end
    assert all(a >= b for a, b in zip(got[W:], got[W + 1:]))      # monotone after warm-up


def test_optim__constant_schedule_and_no_warmup():
    got = lrs(ocfg(lr=0.3, warmup_epochs=0, schedule="constant"), steps_per_epoch=4, epochs=3)
    assert got == pytest.approx([0.3] * 13)
    got = lrs(ocfg(lr=0.3, warmup_epochs=0, schedule="cosine"), steps_per_epoch=4, epochs=3)
    assert got[0] == pytest.approx(0.3) and got[6] == pytest.approx(0.15) and got[12] == pytest.approx(0.0, abs=1e-12)


def test_optim__lr_factor_edges():
    assert lr_factor(0, warmup_steps=0, total_steps=10, schedule="cosine") == 1.0
    assert lr_factor(20, warmup_steps=0, total_steps=10, schedule="cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(10, warmup_steps=10, total_steps=10, schedule="cosine") == 1.0  # warm-up is all of it
    assert set(LR_SCHEDULES.names()) == {"constant", "cosine"}


def test_optim__scheduler_state_round_trips_for_resume():
    cfg = ocfg(lr=0.4, warmup_epochs=1, schedule="cosine")
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5, epochs=4)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    opt2.load_state_dict(opt.state_dict())
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=5, epochs=4)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_optim__scheduler_rejects_bad_arguments():
    p = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="steps_per_epoch >= 1"):
        build_scheduler(p, ocfg(), steps_per_epoch=0, epochs=3)
    with pytest.raises(ConfigError, match="unknown lr schedule 'step'"):
        build_scheduler(p, ocfg(schedule="step"), steps_per_epoch=2, epochs=3)
