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


@pytest.mark.parametrize("path", ["sampled", "class_blocks", "sampled_class_blocks"])
def test_newton_cg__every_preconditioner_reaches_the_same_optimum(data, reference, monkeypatch, path):
    """N above SAMPLE_ROWS: the preconditioner is an importance-sampled Hessian; C (D + 1) above
    FULL_HESSIAN_MAX: one Hessian block per class (sampled per class, the sample growing at each
    rebuild). None may change the answer, only the speed."""
    x, y = data
    if path in ("sampled", "sampled_class_blocks"):
        monkeypatch.setattr(linear, "SAMPLE_ROWS", 300)
    if path in ("class_blocks", "sampled_class_blocks"):
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



def test_poisson_rows__inclusion_probabilities_and_unbiased_weights():
    """About m rows, the heaviest for certain, each row included with probability pi ~ q and weighted
    1 / pi: the weighted sum of values proportional to q (the Hessian's per-row terms) is unbiased."""
    q = torch.rand(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 4
    q[:5] = 50.0  # five rows heavy enough to be taken for certain
    q /= q.sum()
    value = q * torch.rand(400, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    counts, sums, sizes = torch.zeros(400), [], []
    for _ in range(2000):
        rows, inv = linear.poisson_rows(q, 60, gen)
        counts[rows] += 1
        sums.append(float((value[rows] * inv).sum()))
        sizes.append(len(rows))
        assert set(range(5)) <= set(rows.tolist()) and bool((inv[:5] == 1.0).all())
    pi = counts / 2000
    assert abs(np.mean(sizes) - 60) < 0.5 and abs(float(pi.sum()) - 60) < 0.5
    light = q < q[5:].median()
    assert float(pi[light].mean()) < float(pi[~light][5:].mean()) / 5  # drawn ~ q: light rows rarely
    assert abs(np.mean(sums) / float(value.sum()) - 1) < 0.01  # unbiased
    rows, inv = linear.poisson_rows(q, 400, gen)  # m >= N: every row, weight 1
    assert torch.equal(rows, torch.arange(400)) and bool((inv == 1).all())


@pytest.mark.parametrize("threads", [1, 2])
def test_gram__equals_the_product(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # one thread: BLAS syrk; more: torch's GEMM
        z = torch.randn(300, 17, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(linear.gram(z), (z.double().T @ z.double()), rtol=1e-5, atol=1e-4)
        assert linear.gram(z).dtype == torch.float64
    finally:
        torch.set_num_threads(before)


def test_restandardise__the_same_logits_under_other_moments(data):
    x, _ = data
    raw = x * torch.linspace(0.5, 3, D, dtype=x.dtype) + torch.linspace(-2, 2, D, dtype=x.dtype)
    old, new = linear.moments(raw[:1500]), linear.moments(raw)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(D, C, generator=g, dtype=x.dtype), torch.randn(C, generator=g, dtype=x.dtype)
    w, b = linear.restandardise(params, old, new)
    torch.testing.assert_close((raw - new[0]) / new[1] @ w + b, (raw - old[0]) / old[1] @ params[0] + params[1])


def test_newton_cg__a_refit_with_confidently_wrong_new_rows_converges(data):
    """The refit's case: warm-started from a weak-L2 fit, with new rows that the start predicts
    confidently wrong (large gradient, almost no curvature: the undamped Newton step is far too
    long). The damped solver still reaches the exact optimum."""
    x, y = data
    l2 = 1e-6
    start = fit_logreg(x[:1500], y[:1500], l2=l2, num_classes=C, max_iter=100, tol=1e-9)
    scores = x[1500:] @ start[0] + start[1]
    y_new = y.clone()
    y_new[1500:] = scores.argmin(1)  # the class the start finds least likely
    sk = LogisticRegression(C=1.0 / (l2 * N), solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(x.numpy(), y_new.numpy())
    ref = torch.from_numpy(sk.coef_.T.copy()), torch.from_numpy(sk.intercept_.copy())
    params, gmax, _ = solve(LogReg(x, y_new, C), l2=l2, max_iter=100, tol=1e-8, init=start)
    assert gmax <= 1e-8
    check(params, ref, x, y_new, l2, dtype=torch.float64)


@pytest.mark.parametrize("threads", [1, 2])
def test_gradient_and_hessian_products_in_both_layouts(data, threads):
    """One thread: theta @ X^T and R @ X; more: X @ theta^T and X^T @ R^T. Both give the objective's
    gradient and Hessian-vector product (autograd in float64 as the reference)."""
    x, y = data
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prob, g = LogReg(x, y, C), torch.Generator().manual_seed(5)
        theta, v = (torch.randn(C, D + 1, generator=g, dtype=x.dtype) for _ in range(2))
        f, grad, P = prob.loss_grad(theta, 1e-3)
        hv = prob.hess_vec(P, v, 1e-3)
    finally:
        torch.set_num_threads(before)
    w, b = theta[:, :-1].T.clone().requires_grad_(True), theta[:, -1].clone().requires_grad_(True)
    ref_f = objective(w, b, x, y, l2=1e-3)
    gw, gb = torch.autograd.grad(ref_f, (w, b), create_graph=True)
    torch.testing.assert_close(f, float(ref_f.detach()), rtol=1e-10, atol=0)
    torch.testing.assert_close(grad, torch.cat([gw.T, gb[:, None]], 1).detach(), rtol=1e-9, atol=1e-12)
    hw, hb = torch.autograd.grad((gw * v[:, :-1].T).sum() + (gb * v[:, -1]).sum(), (w, b))
    torch.testing.assert_close(hv, torch.cat([hw.T, hb[:, None]], 1), rtol=1e-9, atol=1e-12)
