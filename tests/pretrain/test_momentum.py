"""EMA updates, momentum schedules, target copies and MoCo's negative queue."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evalbench.core.errors import ConfigError
from evalbench.pretrain.momentum import MOMENTUM_SCHEDULES, NegativeQueue, copy_for_target, ema_update, momentum_at


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# --- ema_update ------------------------------------------------------------------------------

def test_ema_update__is_m_target_plus_1_minus_m_online_per_parameter():
    target, online = _net(0), _net(1)
    t0, o0 = dict(target.named_parameters()), dict(online.named_parameters())
    t0 = {k: v.detach().clone() for k, v in t0.items()}
    ema_update(target, online, momentum=0.9)
    for name, p in target.named_parameters():
        want64 = 0.9 * t0[name].double() + 0.1 * o0[name].detach().double()
        assert torch.allclose(p.double(), want64, rtol=0, atol=1e-7), name
        assert torch.equal(p, t0[name] * 0.9 + o0[name].detach() * (1 - 0.9)), name  # the same float32 ops


def test_ema_update__momentum_one_keeps_target_zero_copies_online():
    target, online = _net(0), _net(1)
    before = _snapshot(target)
    ema_update(target, online, momentum=1.0)
    for name, p in target.named_parameters():
        assert torch.equal(p, before[name])
    ema_update(target, online, momentum=0.0)
    for (name, p), o in zip(target.named_parameters(), online.parameters()):
        assert torch.equal(p, o), name


def test_ema_update__leaves_buffers_to_the_targets_own_forward_passes():
    target, online = _net(0), _net(1)
    online.train()(torch.randn(8, 4))              # online BN running stats move
    before = {k: v.clone() for k, v in target.named_buffers()}
    ema_update(target, online, momentum=0.5)
    for name, buf in target.named_buffers():       # running_mean, running_var, num_batches_tracked
        assert torch.equal(buf, before[name]), name
    assert not torch.equal(target[1].running_mean, online[1].running_mean)


def test_ema_update__no_autograd_graph_and_mismatched_networks_fail():
    target, online = _net(0), _net(1)
    ema_update(target, online, momentum=0.9)
    assert all(p.grad_fn is None for p in target.parameters())
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(4, 3), _net(0), momentum=0.9)
    with pytest.raises(ValueError, match="weight"):
        ema_update(nn.Linear(4, 3), nn.Linear(4, 5), momentum=0.9)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ema_update(target, online, momentum=1.5)


# --- momentum_at -----------------------------------------------------------------------------

def test_momentum_at__constant_and_cosine():
    assert momentum_at(37, 100, base=0.99, schedule="constant") == 0.99
    assert momentum_at(0, 100, base=0.996, schedule="cosine") == pytest.approx(0.996, abs=1e-15)
    assert momentum_at(100, 100, base=0.996, schedule="cosine") == pytest.approx(1.0, abs=1e-15)
    assert momentum_at(50, 100, base=0.996, schedule="cosine") == pytest.approx(0.998, abs=1e-15)
    want = 1 - (1 - 0.9) * (math.cos(math.pi * 30 / 120) + 1) / 2
    assert momentum_at(30, 120, base=0.9, schedule="cosine") == pytest.approx(want, abs=1e-15)


def test_momentum_at__unknown_schedule_lists_the_known_ones_and_bad_values_fail():
    assert MOMENTUM_SCHEDULES.names() == ["constant", "cosine"]
    with pytest.raises(ConfigError, match="unknown momentum schedule 'linear'; known: constant, cosine"):
        momentum_at(0, 10, base=0.99, schedule="linear")
    with pytest.raises(ConfigError, match="base"):
        momentum_at(0, 10, base=1.2, schedule="cosine")
    with pytest.raises(ValueError, match="step"):
        momentum_at(11, 10, base=0.99, schedule="cosine")


# --- copy_for_target -------------------------------------------------------------------------

def test_copy_for_target__deep_copy_without_gradients():
    online = _net(0)
    target = copy_for_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for (name, t), o in zip(target.state_dict().items(), online.state_dict().values()):
        assert torch.equal(t, o) and t.data_ptr() != o.data_ptr(), name


# --- NegativeQueue ---------------------------------------------------------------------------

def _rows(start: int, n: int, dim: int = 2) -> torch.Tensor:
    """Keys whose every entry is its row's label: start, start+1, ..."""
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, dim).clone()


def _labels(queue: NegativeQueue) -> list[float]:
    return queue.vectors()[:, 0].tolist()


def test_negative_queue__initial_rows_are_unit_vectors_and_seeded_reproducibly():
    a = NegativeQueue(6, 4, generator=torch.Generator().manual_seed(0))
    b = NegativeQueue(6, 4, generator=torch.Generator().manual_seed(0))
    c = NegativeQueue(6, 4, generator=torch.Generator().manual_seed(1))
    assert a.vectors().shape == (6, 4) and int(a.ptr) == 0
    assert torch.allclose(a.vectors().norm(dim=1), torch.ones(6))
    assert torch.equal(a.vectors(), b.vectors()) and not torch.equal(a.vectors(), c.vectors())


def test_negative_queue__enqueue_wraps_around_writing_the_right_rows():
    queue = NegativeQueue(5, 2, generator=torch.Generator().manual_seed(0))
    init = queue.vectors()[:, 0].tolist()
    queue.enqueue(_rows(10, 3))                    # rows 0..2
    assert _labels(queue) == [10, 11, 12, init[3], init[4]] and int(queue.ptr) == 3
    queue.enqueue(_rows(20, 3))                    # rows 3, 4, then wraps to 0
    assert _labels(queue) == [22, 11, 12, 20, 21] and int(queue.ptr) == 1
    queue.enqueue(_rows(30, 4))                    # rows 1..4, ptr back to 0
    assert _labels(queue) == [22, 30, 31, 32, 33] and int(queue.ptr) == 0


def test_negative_queue__more_keys_than_rows_keeps_the_last_size():
    queue = NegativeQueue(4, 2)
    queue.enqueue(_rows(0, 1))                     # ptr 1
    queue.enqueue(_rows(100, 7))                   # writes rows 1,2,3,0,1,2,3: last 4 keys 103..106 remain
    assert _labels(queue) == [103, 104, 105, 106] and int(queue.ptr) == 0
    queue.enqueue(_rows(200, 9))                   # ptr 0 + 9 = 9 -> 1; last 4 keys land on rows 1,2,3,0
    assert _labels(queue) == [208, 205, 206, 207] and int(queue.ptr) == 1


def test_negative_queue__state_dict_round_trip_resumes_exactly():
    queue = NegativeQueue(5, 3, generator=torch.Generator().manual_seed(0))
    queue.enqueue(_rows(1, 3, dim=3))
    assert set(queue.state_dict()) == {"queue", "ptr"}
    resumed = NegativeQueue(5, 3, generator=torch.Generator().manual_seed(99))
    resumed.load_state_dict(queue.state_dict())
    assert torch.equal(resumed.vectors(), queue.vectors()) and int(resumed.ptr) == 3
    for q in (queue, resumed):
        q.enqueue(_rows(7, 4, dim=3))
    assert torch.equal(resumed.vectors(), queue.vectors()) and int(resumed.ptr) == int(queue.ptr) == 2


def test_negative_queue__vectors_is_a_detached_clone_and_keys_are_checked():
    queue = NegativeQueue(3, 2)
    v = queue.vectors()
    v.zero_()
    assert not torch.equal(queue.vectors(), v)
    keys = torch.ones(2, 2, requires_grad=True)
    queue.enqueue(keys)
    assert not queue.queue.requires_grad
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        queue.enqueue(torch.ones(2, 3))
    with pytest.raises(ConfigError, match="size"):
        NegativeQueue(0, 2)
