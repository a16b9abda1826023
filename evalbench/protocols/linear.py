"""Linear probe on frozen features (linear@2).

Multinomial logistic regression on cached, non-augmented features, the protocol of Kornblith
et al. 2019 ("Do Better ImageNet Models Transfer Better?") and CLIP's linear-probe evaluation
(openai/CLIP README, sklearn LogisticRegression with the L2 strength swept on a validation
split). Features are standardised with training statistics. The L2 strength is chosen on val
from a log grid (ties: the stronger one), then the model is refit on train + val and test top-1
is reported with the chosen value.

Objective: mean cross-entropy + (l2 / 2) * ||W||^2 (bias unregularised); this equals
scikit-learn's LogisticRegression with C = 1 / (l2 * n_train) for 3 or more classes (for two
classes scikit-learn fits one weight vector, and C = 2 / (l2 * n_train)).

Solver: every fit is solved to a max-abs gradient <= ``tol`` (the convergence that
``refit_grad_max`` records) by a truncated Newton method (Nocedal & Wright, "Numerical
Optimization", 2nd ed., Alg. 7.1; the solver of scikit-learn's ``newton-cg`` and liblinear's
TRON). Each Newton step solves H d = -g by conjugate gradients on exact Hessian-vector products
(two GEMMs over the data). CG is preconditioned by the exact Hessian of an importance-sampled
subset of the rows (Cholesky-factored; the idea of subsampled-Newton methods, Roosta-Khorasani &
Mahoney 2016), which captures the coupling between classes and correlated features that makes
weak-L2 fits ill-conditioned (hundreds of L-BFGS iterations). The grid is warm-started
strongest -> weakest and the refit from the chosen fit. Arithmetic is float32 (where the
features are); the reported refit gradient is checked in float64 and polished there if needed.
"""
from __future__ import annotations

from typing import Annotated, Callable, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from evalbench.core.validate import PositiveFloat
from evalbench.features.artifact import Features
from evalbench.protocols.bootstrap import Predictions
from evalbench.protocols.base import PARAMS, PROBES, ProbeParams, ProbeResult

Params = tuple[torch.Tensor, torch.Tensor]  # W (D, C), b (C,)


@PARAMS.register("linear")
class LinearParams(ProbeParams):
    l2_grid: Annotated[list[PositiveFloat], Field(min_length=1, description="a non-empty list of finite numbers > 0")]
    max_iter: Annotated[int, Field(ge=1, description="an integer >= 1 (Newton steps per fit)")]
    tol: Annotated[float, Field(gt=0, allow_inf_nan=False, description="a finite number > 0 (max-abs gradient)")] = 1e-6

    @field_validator("l2_grid")
    @classmethod
    def _distinct(cls, grid: list[float]) -> list[float]:
        dup = next((v for v in grid if grid.count(v) > 1), None)
        if dup is not None:
            raise ValueError(f"{dup:g} is listed twice; list each L2 strength once")
        return grid

SAMPLE_ROWS = 8192  # rows of the preconditioner's Hessian (all rows below this)
FULL_HESSIAN_MAX = 3072  # C * (D + 1) above this: one Hessian block per class (the full one costs too much)
NEAR_RATIO = 3.0  # a grid value within this factor of the previous one starts from its preconditioner
REBUILD_AFTER_CG = 30  # rebuild the preconditioner when a Newton step needed more CG steps than this


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def objective(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, l2: float) -> torch.Tensor:
    """Mean cross-entropy of logits x @ w + b (N, C) plus (l2 / 2) ||w||^2; the bias is unregularised."""
    return F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()


class LogReg:
    """The data in the solver's layout. Parameters theta (C, D + 1): [W^T | b].

    X (N, D + 1) with a ones column and its transpose XT are both kept: theta @ XT and
    R @ X are the two fast GEMM layouts for (C, N) logits and (C, D + 1) gradients (2x faster
    than X @ theta^T and R^T @ X here).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int):
        self.n, self.c = len(x), num_classes
        self.X = torch.cat([x, x.new_ones(len(x), 1)], 1).contiguous()  # (N, D1)
        self.XT = self.X.T.contiguous()  # (D1, N)
        self.Y = x.new_zeros(num_classes, len(x)).scatter_(0, y[None].to(x.device), 1.0)  # one-hot (C, N)
        self.d1 = self.X.shape[1]

    def double(self) -> "LogReg":
        """The same problem in float64 (made once, on demand)."""
        if getattr(self, "_double", None) is None:
            self._double = LogReg(self.X[:, :-1].double(), self.Y.argmax(0), self.c)
        return self._double

    def loss_grad(self, theta: torch.Tensor, l2: float) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Objective (summed in float64), gradient (C, D1) and softmax probabilities P (C, N)."""
        logits = theta @ self.XT  # (C, N)
        lse = torch.logsumexp(logits, 0)
        P = torch.exp(logits - lse)
        w = theta[:, :-1]
        f = (lse.double().sum() - (logits * self.Y).sum(0).double().sum()) / self.n + 0.5 * l2 * float((w.double() ** 2).sum())
        G = (P - self.Y) @ self.X / self.n
        G[:, :-1] += l2 * w
        return float(f), G, P

    def hess_vec(self, P: torch.Tensor, V: torch.Tensor, l2: float) -> torch.Tensor:
        """H V: per row, (diag(p) - p p^T) (V x); then X^T; plus l2 on the weights."""
        R = P * (V @ self.XT)  # (C, N)
        R -= P * R.sum(0, keepdim=True)
        out = R @ self.X / self.n
        out[:, :-1] += l2 * V[:, :-1]
        return out


def sum_zero(theta: torch.Tensor) -> torch.Tensor:
    """Softmax ignores a shift shared by all classes, and the optimum has none: remove it."""
    return theta - theta.mean(0, keepdim=True)


def sampled_rows(prob: LogReg, P: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and weights (summing to ~1) for the Hessian estimate: all rows, or SAMPLE_ROWS drawn with
    probability ~ curvature (1 - ||p||^2) * ||x||^2, reweighted to stay unbiased."""
    if prob.n <= SAMPLE_ROWS:
        return torch.arange(prob.n, device=P.device), P.new_full((prob.n,), 1.0 / prob.n)
    q = (1 - (P * P).sum(0)) * (prob.X * prob.X).sum(1) + 1e-12
    q = q / q.sum()
    rows = torch.multinomial(q.cpu().double(), SAMPLE_ROWS, replacement=True, generator=gen).to(P.device)
    return rows, 1.0 / (SAMPLE_ROWS * prob.n * q[rows])


def hessian_rows(Z: torch.Tensor, Pr: torch.Tensor, w: torch.Tensor, *, upto: Optional[int] = None) -> list[torch.Tensor]:
    """sum_r w_r (delta_ab p_a - p_a p_b) z_r z_r^T for a <= b < a + upto (all b >= a: None), per
    class a: (D1, blocks, D1). Z (m, D1), Pr (m, C), w (m,)."""
    m, c, d1 = len(Z), Pr.shape[1], Z.shape[1]
    Zp = Z[:, None, :] * Pr[:, :, None]  # (m, C, D1): z p_b
    Zwp = Zp * w[:, None, None]  # w z p_a
    out = []
    for a in range(c):
        b1 = c if upto is None else min(c, a + upto)
        B = -(Zwp[:, a, :].T @ Zp[:, a:b1, :].reshape(m, -1)).reshape(d1, b1 - a, d1)
        B[:, 0, :] += Zwp[:, a, :].T @ Z  # delta_ab w p_a z z^T
        out.append(B)
    return out


def cholesky(H: torch.Tensor) -> torch.Tensor:
    """Cholesky factor, with a small ridge if rounding made H indefinite (it is only a preconditioner)."""
    L, info = torch.linalg.cholesky_ex(H)
    ridge = 1e-10 * float(H.diagonal(dim1=-2, dim2=-1).abs().max())
    while bool((info != 0).any()):
        L, info = torch.linalg.cholesky_ex(H + ridge * torch.eye(H.shape[-1], dtype=H.dtype, device=H.device))
        ridge *= 10
    return L


class Preconditioner:
    """M^-1 for CG: the inverse of the sampled Hessian (float64), on the sum-zero subspace.

    The data part is built once from P (importance-sampled rows); ``factor(l2)`` adds the penalty
    and factors, so a fit that starts where the previous grid value ended (same P) reuses the
    data part and pays only the Cholesky. While C (D + 1) <= FULL_HESSIAN_MAX it is the full
    Hessian (every class-class and feature-feature coupling); above, one (D + 1)^2 block per class
    (the class coupling dropped: on 512-d features this needed fewer CG steps than keeping the class
    coupling per principal direction instead). The Hessian's null directions (a shift shared by all
    classes) get an identity block, so M is definite.
    """

    def __init__(self, prob: LogReg, P: torch.Tensor, gen: torch.Generator):
        c, d1 = prob.c, prob.d1
        rows, w = sampled_rows(prob, P, gen)
        Z, Pr, w = prob.X[rows], P[:, rows].T, w.to(P.dtype)
        self.full, self.l2, self.shape = c * d1 <= FULL_HESSIAN_MAX, None, (c, d1)
        blocks = hessian_rows(Z, Pr, w, upto=None if self.full else 1)
        if self.full:
            H = torch.zeros(c, d1, c, d1, dtype=torch.float64, device=P.device)
            for a, B in enumerate(blocks):
                B = B.double()
                H[a, :, a:, :] = B
                H[a + 1:, :, a, :] = B[:, 1:, :].permute(1, 2, 0)
            H.diagonal(dim1=1, dim2=3).add_(1.0 / c)  # + (1 1^T / C) kron I: the null directions
            self.data = H.reshape(c * d1, c * d1)
        else:
            self.data = torch.stack([B[:, 0, :].double() for B in blocks])  # (C, D1, D1)
            self.data[:, -1, -1] += 1e-12  # the bias block alone is singular (its null direction)

    def close_to(self, l2: float) -> bool:
        """Whether the factored penalty is within NEAR_RATIO of l2 (good enough to precondition l2)."""
        return self.l2 is not None and 1 / NEAR_RATIO <= l2 / self.l2 <= NEAR_RATIO

    def factor(self, l2: float) -> "Preconditioner":
        """Factor with penalty l2, unless the current factor is close to it (dense grids: no new Cholesky)."""
        if not self.close_to(l2):
            pen = torch.full(self.shape, l2, dtype=torch.float64, device=self.data.device)
            pen[:, -1] = 0.0  # the bias is unpenalised
            self.L = cholesky(self.data + (torch.diag(pen.reshape(-1)) if self.full else torch.diag_embed(pen)))
            self.l2 = l2
        return self

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        if self.full:
            return sum_zero(torch.cholesky_solve(g.double().reshape(-1, 1), self.L).reshape(g.shape).to(g.dtype))
        return sum_zero(torch.cholesky_solve(g.double()[:, :, None], self.L)[:, :, 0].to(g.dtype))


def conjugate_gradient(prob: LogReg, P: torch.Tensor, g: torch.Tensor, l2: float, precond: Callable[[torch.Tensor], torch.Tensor],
                       *, floor: float, max_steps: int = 100) -> tuple[torch.Tensor, int]:
    """Approximate Newton direction: H d = -g to a relative residual min(0.5, sqrt|g|) (superlinear
    convergence), or to the absolute residual floor (below the tolerance the fit needs: no further)."""
    b = -sum_zero(g)
    d, r = torch.zeros_like(b), b.clone()
    z = precond(r)
    p, rz = z.clone(), (r * z).sum()
    target = max(min(0.5, float(b.norm()) ** 0.5) * float(b.norm()), floor)
    for step in range(1, max_steps + 1):
        Hp = prob.hess_vec(P, p, l2)
        curv = (p * Hp).sum()
        if curv <= 0:  # rounding: stop with what we have
            break
        alpha = rz / curv
        d += alpha * p
        r -= alpha * Hp
        if float(r.norm()) <= target:
            break
        z = precond(r)
        rz, rz_old = (r * z).sum(), rz
        p = z + (rz / rz_old) * p
    return (d if d.abs().sum() > 0 else b), step


def newton(prob: LogReg, theta: torch.Tensor, l2: float, *, tol: float, max_iter: int, gen: torch.Generator,
           precond: Optional[Preconditioner] = None) -> tuple[torch.Tensor, float, int, Optional[Preconditioner]]:
    """Newton-CG with a backtracking (Armijo) line search, until max|grad| <= tol or max_iter steps.

    Returns (theta, max|grad|, Newton steps, the last preconditioner: the next grid value starts
    from it if its l2 is near, else from a fresh one built at its own starting point). A step is
    also accepted when it lowers max|grad| without raising the objective beyond rounding: near the
    optimum, float32 cannot resolve the objective's decrease but still the gradient's. The
    preconditioner is rebuilt after a Newton step that needed more than REBUILD_AFTER_CG CG steps
    (about what a build costs); the loop stops early only when even a fresh one gives no progress
    (the precision's floor).
    """
    theta = sum_zero(theta)
    f, G, P = prob.loss_grad(theta, l2)
    gmax, fresh, it = float(G.abs().max()), False, 0
    if precond is not None and not precond.close_to(l2):  # e.g. a 10x step along the grid: build afresh here
        precond = None
    rounding = 10 * torch.finfo(theta.dtype).eps  # relative noise of the objective's per-row terms
    while gmax > tol and it < max_iter:
        it += 1
        if precond is None:
            precond, fresh = Preconditioner(prob, P, gen), True
        d, cg_steps = conjugate_gradient(prob, P, G, l2, precond.factor(l2), floor=0.1 * tol)
        slope, step = float((G * d).sum()), 1.0
        while True:
            f2, G2, P2 = prob.loss_grad(theta + step * d, l2)
            g2 = float(G2.abs().max())
            ok = f2 <= f + 1e-4 * step * slope or (g2 < gmax and f2 <= f + rounding * abs(f))
            if ok or step < 1e-4:
                break
            step *= 0.5
        if not ok:  # no progress along this direction
            if fresh:
                break
            precond = None
            continue
        theta, f, G, P, gmax = theta + step * d, f2, G2, P2, g2
        fresh = False
        if cg_steps > REBUILD_AFTER_CG:
            precond = None
    return theta, gmax, it, precond


def to_theta(params: Params) -> torch.Tensor:
    return torch.cat([params[0].T, params[1][:, None]], 1)


def from_theta(theta: torch.Tensor) -> Params:
    return theta[:, :-1].T.contiguous(), theta[:, -1].contiguous()


def solve(prob: LogReg, *, l2: float, max_iter: int, tol: float, init: Optional[Params],
          precond: Optional[Preconditioner] = None) -> tuple[Params, float, Optional[Preconditioner]]:
    """Minimise ``objective`` on prob to max|grad| <= tol (at most max_iter Newton steps).

    Returns (W, b), max|grad| and the last preconditioner (pass it to the next warm-started fit).
    """
    theta = to_theta(init).to(prob.X.dtype) if init else prob.X.new_zeros(prob.c, prob.d1)
    gen = torch.Generator().manual_seed(0)  # the preconditioner's rows: the fit stays deterministic
    theta, gmax, it, precond = newton(prob, theta, l2, tol=tol, max_iter=max_iter, gen=gen, precond=precond)
    if gmax > tol and it < max_iter and prob.X.dtype != torch.float64:  # float32's floor: finish in float64
        theta, gmax, _, _ = newton(prob.double(), theta.double(), l2, tol=tol, max_iter=max_iter - it, gen=gen)
    return from_theta(theta.to(prob.X.dtype)), gmax, precond


def fit_logreg(x: torch.Tensor, y: torch.Tensor, *, l2: float, num_classes: int, max_iter: int,
               init: Optional[Params] = None, tol: float = 1e-6) -> Params:
    """Minimise ``objective`` on (x, y) to max|grad| <= tol, from init (warm start) or zero."""
    return solve(LogReg(x, y, num_classes), l2=l2, max_iter=max_iter, tol=tol, init=init)[0]


def grad_norm(params: Params, x: torch.Tensor, y: torch.Tensor, *, l2: float) -> float:
    """Max-abs gradient of the objective at params: ~0 when the fit converged (a record of it)."""
    w, b = (p.clone().requires_grad_(True) for p in params)
    gw, gb = torch.autograd.grad(objective(w, b, x, y, l2=l2), (w, b))
    return float(torch.cat([gw.flatten(), gb]).abs().max())


def predict(params: Params, x: torch.Tensor) -> torch.Tensor:
    return (x @ params[0] + params[1]).argmax(1)


def accuracy(params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(params, x) == y).float().mean())


def select_l2(x_tr: torch.Tensor, y_tr: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
              grid: list[float], num_classes: int, max_iter: int, tol: float = 1e-6
              ) -> tuple[float, dict[float, float], Params, float]:
    """Val top-1 for each l2, strongest first with warm starts; best l2 (ties: stronger), its fit, and
    the largest max|grad| over the grid's fits."""
    prob = LogReg(x_tr, y_tr, num_classes)
    curve: dict[float, float] = {}
    fits: dict[float, Params] = {}
    params: Optional[Params] = None
    worst, precond = 0.0, None
    for l2 in sorted(grid, reverse=True):
        params, gmax, precond = solve(prob, l2=l2, max_iter=max_iter, tol=tol, init=params, precond=precond)
        fits[l2], curve[l2], worst = params, accuracy(params, x_val, y_val), max(worst, gmax)
    best = max(curve.values())
    chosen = max(l2 for l2, acc in curve.items() if acc == best)
    return chosen, curve, fits[chosen], worst


@PROBES.register("linear")
def linear_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = (features.tensors(s, device=device) for s in ("train", "val", "test"))
    grid = [float(v) for v in params["l2_grid"]]
    max_iter, tol, c = int(params["max_iter"]), float(params.get("tol", 1e-6)), features.num_classes
    xs_tr, xs_val = standardise(x_tr, x_val)  # selection statistics: train only
    l2, curve, chosen_fit, grid_grad = select_l2(xs_tr, y_tr, xs_val, y_val, grid=grid, num_classes=c,
                                                 max_iter=max_iter, tol=tol)
    x_all, x_test = standardise(torch.cat([x_tr, x_val]), x_test)  # refit statistics: train + val
    y_all = torch.cat([y_tr, y_val])
    final = fit_logreg(x_all, y_all, l2=l2, num_classes=c, max_iter=max_iter, init=chosen_fit, tol=tol)  # warm start
    refit_grad = grad_norm(tuple(p.double() for p in final), x_all.double(), y_all, l2=l2)  # checked in float64
    details = {"l2": l2, "val_top1": curve[l2], "l2_at_grid_edge": l2 in (min(grid), max(grid)),
               "refit_grad_max": refit_grad, "grid_grad_max": grid_grad,
               "val_curve": {f"{k:g}": v for k, v in sorted(curve.items())}}
    predictions = Predictions(y_test.cpu().numpy(), {"top1": predict(final, x_test).cpu().numpy()})
    return ProbeResult({"top1": accuracy(final, x_test, y_test)}, details, predictions)
