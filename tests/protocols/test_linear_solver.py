"""The linear probe's Newton-CG solver against an exact-Newton reference, on an ill-conditioned problem.

The reference is scikit-learn's ``newton-cholesky`` solver (full Hessian, Cholesky-factored, in
float64) at a tight tolerance: an independent implementation of the same objective,
mean CE + l2/2 ||W||^2 with an unpenalised bias (C = 1 / (l2 * n)). Correlated features (a
condition number of about 1e8) and weak L2 are what makes first-order solvers stop early.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import evalbench.protocols.linear as linear
from evalbench.protocols.linear import LogReg, fit_logreg, objective, solve, standardise

N, D, C = 2000, 16, 4


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(D, D)) * np.logspace(0, -3, D)[:, None]  # correlated features
    x = rng.normal(size=(N, D)) @ mix
    y = (x @ (3 * rng.normal(size=(D, C))) + rng.gumbel(size=(N, C))).argmax(1)
    (xs,) = standardise(torch.from_numpy(x))
    return xs, torch.from_numpy(y)


@pytest.fixture(scope="module")
def reference(data) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    x, y = data
    out = {}
    for l2 in (1e-6, 1e-3):
        sk = LogisticRegression(C=1.0 / (l2 * N), solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(x.numpy(), y.numpy())
        out[l2] = torch.from_numpy(sk.coef_.T.copy()), torch.from_numpy(sk.intercept_.copy())
    return out


def check(params, ref, x, y, l2, *, dtype):
    """Objective at least as low as the reference's (to rounding) and the same weights."""
    w, b = (p.double() for p in params)
    f_ours, f_ref = float(objective(w, b, x, y, l2=l2)), float(objective(*ref, x, y, l2=l2))
    assert f_ours <= f_ref + (1e-10 if dtype == torch.float64 else 1e-7), (f_ours, f_ref)
    rel = float((w - ref[0]).norm() / ref[0].norm())
    assert rel < (1e-5 if dtype == torch.float64 else 1e-3), rel
    # the bias is unpenalised, so it is fixed only up to a shared shift: compare centred
    torch.testing.assert_close(b - b.mean(), ref[1] - ref[1].mean(), rtol=0, atol=1e-3 * float(ref[1].abs().max()) + 1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("l2", [1e-6, 1e-3])
def test_newton_cg__reaches_the_exact_optimum(data, reference, l2, dtype):
    x, y = data
    prob = LogReg(x.to(dtype), y, C)
    params, gmax, _ = solve(prob, l2=l2, max_iter=100, tol=1e-7, init=None)
    assert gmax <= 1e-7
    check(params, reference[l2], x, y, l2, dtype=dtype)


@pytest.mark.parametrize("path", ["sampled", "class_blocks"])
def test_newton_cg__every_preconditioner_reaches_the_same_optimum(data, reference, monkeypatch, path):
    """N above SAMPLE_ROWS: the preconditioner is an importance-sampled Hessian; C (D + 1) above
    FULL_HESSIAN_MAX: one Hessian block per class. Neither may change the answer, only the speed."""
    x, y = data
    if path == "sampled":
        monkeypatch.setattr(linear, "SAMPLE_ROWS", 300)
    else:
        monkeypatch.setattr(linear, "FULL_HESSIAN_MAX", 0)
    for l2 in (1e-3, 1e-6):  # warm-started, as along the grid
        params, gmax, _ = solve(LogReg(x, y, C), l2=l2, max_iter=200, tol=1e-7, init=None if l2 == 1e-3 else params)
        assert gmax <= 1e-7, (path, l2)
        check(params, reference[l2], x, y, l2, dtype=torch.float64)


def test_fit_logreg__any_warm_start_and_deterministic(data, reference):
    x, y = data
    rng = torch.Generator().manual_seed(3)
    # an init with a shift shared by all classes (softmax ignores it, the penalty does not)
    init = (torch.randn(D, C, generator=rng, dtype=torch.float64) + 5.0, torch.randn(C, generator=rng, dtype=torch.float64))
    a = fit_logreg(x, y, l2=1e-3, num_classes=C, max_iter=100, init=init, tol=1e-8)
    check(a, reference[1e-3], x, y, 1e-3, dtype=torch.float64)
    x32 = x.float()
    b1 = fit_logreg(x32, y, l2=1e-6, num_classes=C, max_iter=100)
    b2 = fit_logreg(x32, y, l2=1e-6, num_classes=C, max_iter=100)
    assert all(torch.equal(p, q) for p, q in zip(b1, b2))
    assert b1[0].dtype == torch.float32


def test_fit_logreg__max_iter_bounds_the_work(data):
    x, y = data
    w, _ = fit_logreg(x, y, l2=1e-6, num_classes=C, max_iter=1)  # one Newton step from zero: not converged
    prob = LogReg(x, y, C)
    g = prob.loss_grad(linear.to_theta((w, torch.zeros(C, dtype=w.dtype))), 1e-6)[1]
    assert float(g.abs().max()) > 1e-4

