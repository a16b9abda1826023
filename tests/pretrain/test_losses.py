"""The SSL losses against independent float64 reference formulas (plain Python loops over anchors),
plus their properties: symmetry, minima, ranges and where the gradient flows."""
from __future__ import annotations

import math

import pytest
import torch

from evalbench.pretrain.losses import byol_loss, info_nce, negative_cosine, nt_xent


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """-log(exp(s_ip/T) / sum_{k != i} exp(s_ik/T)) averaged over the 2N anchors, written out."""
    views = [_unit(v) for v in z1.double().tolist() + z2.double().tolist()]
    n = len(views) // 2
    total = 0.0
    for i, anchor in enumerate(views):
        pos = i + n if i < n else i - n
        denom = sum(math.exp(_dot(anchor, other) / t) for k, other in enumerate(views) if k != i)
        total += -math.log(math.exp(_dot(anchor, views[pos]) / t) / denom)
    return total / (2 * n)


def _ref_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, t: float) -> float:
    qs = [_unit(v) for v in q.double().tolist()]
    ks = [_unit(v) for v in k.double().tolist()]
    total = 0.0
    for i, qi in enumerate(qs):
        pos = math.exp(_dot(qi, ks[i]) / t)
        if queue is None:  # every key of the batch, its own included
            denom = sum(math.exp(_dot(qi, kj) / t) for kj in ks)
        else:  # its own key + the queue
            denom = pos + sum(math.exp(_dot(qi, _unit(neg)) / t) for neg in queue.double().tolist())
        total += -math.log(pos / denom)
    return total / len(qs)


def _ref_cos(p: torch.Tensor, z: torch.Tensor) -> list[float]:
    return [_dot(_unit(a), _unit(b)) for a, b in zip(p.double().tolist(), z.double().tolist())]


# --- NT-Xent ---------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent__matches_the_explicit_loop_over_anchors(t):
    z1, z2 = _rand(5, 7, seed=0), _rand(5, 7, seed=1)
    assert nt_xent(z1, z2, temperature=t).item() == pytest.approx(_ref_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent__float64_matches_to_high_precision_and_is_unscaled_by_norms():
    z1, z2 = _rand(4, 3, seed=2).double(), _rand(4, 3, seed=3).double()
    assert nt_xent(z1, z2, temperature=0.2).item() == pytest.approx(_ref_nt_xent(z1, z2, 0.2), rel=1e-12)
    # projections are L2-normalised inside: scaling a row changes nothing
    scaled = z1 * torch.tensor([[3.0], [0.5], [10.0], [1.0]], dtype=torch.float64)
    assert nt_xent(scaled, z2, temperature=0.2).item() == pytest.approx(nt_xent(z1, z2, temperature=0.2).item(), rel=1e-12)


def test_nt_xent__symmetric_in_the_two_views():
    z1, z2 = _rand(6, 8, seed=4), _rand(6, 8, seed=5)
    assert torch.allclose(nt_xent(z1, z2, temperature=0.3), nt_xent(z2, z1, temperature=0.3))


def test_nt_xent__identical_well_separated_views_beat_random_ones_and_approach_the_floor():
    t = 0.1
    basis = torch.eye(4, dtype=torch.float64)  # 4 orthogonal images, both views identical
    best = nt_xent(basis, basis, temperature=t).item()
    # floor: positive at cos 1, the other 2N-2 = 6 vectors at cos 0: log(1 + 6 exp(-1/T))
    assert best == pytest.approx(math.log(1 + 6 * math.exp(-1 / t)), rel=1e-9)
    assert best < 1e-3
    assert best < nt_xent(basis, _rand(4, 4, seed=6).double(), temperature=t).item()


def test_nt_xent__stable_at_tiny_temperature_and_gradients_are_finite():
    z1, z2 = _rand(3, 5, seed=7).requires_grad_(), _rand(3, 5, seed=8).requires_grad_()
    loss = nt_xent(z1, z2, temperature=1e-4)  # logits up to 1e4: exp would overflow in float32
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_nt_xent__rejects_mismatched_shapes_and_bad_temperature():
    with pytest.raises(ValueError, match="shape"):
        nt_xent(torch.zeros(3, 4), torch.zeros(2, 4), temperature=0.1)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(3, 4), torch.ones(3, 4), temperature=0.0)


# --- InfoNCE ---------------------------------------------------------------------------------

def test_info_nce__with_a_queue_matches_the_explicit_formula():
    q, k, queue = _rand(4, 6, seed=10), _rand(4, 6, seed=11), _rand(9, 6, seed=12)
    got = info_nce(q, k, queue, temperature=0.2).item()
    assert got == pytest.approx(_ref_info_nce(q, k, queue, 0.2), rel=1e-5)


def test_info_nce__without_a_queue_uses_the_other_keys_of_the_batch():
    q, k = _rand(5, 6, seed=13), _rand(5, 6, seed=14)
    got = info_nce(q, k, None, temperature=0.5).item()
    assert got == pytest.approx(_ref_info_nce(q, k, None, 0.5), rel=1e-5)


def test_info_nce__no_gradient_to_keys_or_queue_gradient_to_queries():
    q = _rand(4, 6, seed=15).requires_grad_()
    k = _rand(4, 6, seed=16).requires_grad_()   # a caller that forgot to detach
    queue = _rand(8, 6, seed=17).requires_grad_()
    info_nce(q, k, queue, temperature=0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None


def test_info_nce__rejects_a_queue_of_another_dimension():
    with pytest.raises(ValueError, match="queue"):
        info_nce(torch.ones(2, 4), torch.ones(2, 4), torch.ones(5, 3), temperature=0.1)


# --- BYOL ------------------------------------------------------------------------------------

def test_byol_loss__equals_two_minus_two_cosine_and_lies_in_0_4():
    p, z = _rand(6, 5, seed=20), _rand(6, 5, seed=21)
    want = sum(2 - 2 * c for c in _ref_cos(p, z)) / 6
    assert byol_loss(p, z).item() == pytest.approx(want, rel=1e-5)
    assert byol_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, rel=1e-6)
    assert 0.0 <= byol_loss(p, z).item() <= 4.0


def test_byol_loss__equals_squared_distance_of_normalised_vectors():
    p, z = _rand(3, 4, seed=22).double(), _rand(3, 4, seed=23).double()
    pn, zn = p / p.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
    assert byol_loss(p, z).item() == pytest.approx(((pn - zn) ** 2).sum(dim=1).mean().item(), rel=1e-12)


def test_byol_loss__no_gradient_to_the_target():
    p, z = _rand(4, 5, seed=24).requires_grad_(), _rand(4, 5, seed=25).requires_grad_()
    byol_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


# --- SimSiam ---------------------------------------------------------------------------------

def test_negative_cosine__equals_minus_mean_cosine():
    p, z = _rand(6, 5, seed=30), _rand(6, 5, seed=31)
    want = -sum(_ref_cos(p, z)) / 6
    assert negative_cosine(p, z).item() == pytest.approx(want, rel=1e-5)
    assert negative_cosine(p, z, stop_gradient=False).item() == pytest.approx(want, rel=1e-5)
    assert negative_cosine(p, 2 * p).item() == pytest.approx(-1.0, rel=1e-6)


def test_negative_cosine__stop_gradient_decides_whether_z_gets_a_gradient():
    p, z = _rand(4, 5, seed=32).requires_grad_(), _rand(4, 5, seed=33).requires_grad_()
    negative_cosine(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None

    p, z = _rand(4, 5, seed=32).requires_grad_(), _rand(4, 5, seed=33).requires_grad_()
    negative_cosine(p, z, stop_gradient=False).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
