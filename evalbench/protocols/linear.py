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
weak-L2 fits ill-conditioned (hundreds of L-BFGS iterations). Above FULL_HESSIAN_MAX parameters it
keeps one block per class, each from its own sample of the rows that carry that class's curvature,
and the sample doubles whenever CG still needs many steps (weak L2 needs the most rows). The grid
is warm-started strongest -> weakest and the refit from the chosen fit. Arithmetic is float32 (where the
features are); the reported refit gradient is checked in float64 and polished there if needed.
"""
from __future__ import annotations

import functools
from typing import Annotated, Callable, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController

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

SAMPLE_ROWS = 8192  # rows of the preconditioner's Hessian (all rows below this); per-class blocks: the first size, doubled at each rebuild
FULL_HESSIAN_MAX = 512  # C * (D + 1) above this: one Hessian block per class (on 128-d features, 10 classes, the blocks were
# faster at every size: digits 1.19 -> 0.63 s, mnist5k 2.16 -> 0.87 s, fashion-mnist 8.1 -> 6.5 s per probe at 1 thread, same
# val curves; the full Hessian cost (C (D + 1))^3 / 3 per Cholesky and a dense solve per CG step)
NEAR_RATIO = 3.0  # a grid value within this factor of the previous one starts from its preconditioner
MAX_DAMPING = 1e4  # Levenberg-Marquardt damping beyond which a failed line search is final (the loss's curvature is <= 1 per unit ||x||^2)
PAD_CLASSES = 16  # the gradient GEMM's class dimension, padded with zeros at > 1 thread (LogReg.back)
REBUILD_AFTER_CG = 30  # rebuild the preconditioner when a Newton step needed more CG steps than this


Moments = tuple[torch.Tensor, torch.Tensor]  # per-feature mean, std


def moments(train: torch.Tensor) -> Moments:
    return train.mean(0), train.std(0).clamp_min(1e-6)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = moments(train)
    return [(t - mean) / std for t in (train, *others)]


def restandardise(params: Params, old: Moments, new: Moments) -> Params:
    """The same linear map on features standardised with ``new`` instead of ``old`` moments: equal logits
    for every input (the refit starts from the chosen fit's function, not from its numbers on other axes)."""
    (w, b), (mu0, sd0), (mu1, sd1) = params, old, new
    return w * (sd1 / sd0)[:, None], b + ((mu1 - mu0) / sd0) @ w


def objective(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, l2: float) -> torch.Tensor:
    """Mean cross-entropy of logits x @ w + b (N, C) plus (l2 / 2) ||w||^2; the bias is unregularised."""
    return F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()


class LogReg:
    """The data in the solver's layout. Parameters theta (C, D + 1): [W^T | b].

    X (N, D + 1) with a ones column and its transpose XT are both kept. With one thread, theta @ XT
    and R @ X are the fast GEMM layouts for (C, N) logits and (C, D + 1) gradients (1.2-2x faster than
    X @ theta^T and XT @ R^T); with more, only the latter two split their work over the threads
    (10 x 55000 x 513: 18.6 + 22.0 ms against 13.9 + 14.4 ms at 2 threads), so ``scores`` and ``back``
    pick the layout by torch's thread count (on CUDA: the latter).
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

    def _one_cpu_thread(self) -> bool:
        return self.X.device.type == "cpu" and torch.get_num_threads() == 1

    def scores(self, theta: torch.Tensor) -> torch.Tensor:
        """theta (C, D1) -> X theta^T as (C, N), contiguous."""
        if self._one_cpu_thread():
            return theta @ self.XT
        return (self.X @ theta.T).T.contiguous()

    def back(self, R: torch.Tensor) -> torch.Tensor:
        """R (C, N) -> R X as (C, D1). With more than one CPU thread, R gets zero rows up to a multiple of
        PAD_CLASSES first: X^T R^T with 16 columns is the faster GEMM (55000 x 513, 2 threads: 10.2 ms for
        16 columns against 17.4 ms for 10; the resnet18 probe 44.6 s -> 38.2 s, same val curve)."""
        if self._one_cpu_thread():
            return R @ self.X
        c, pad = len(R), (-len(R) % PAD_CLASSES if self.X.device.type == "cpu" else 0)
        if pad:
            R = torch.cat([R, R.new_zeros(pad, R.shape[1])])
        return (self.XT @ R.T).T[:c]

    def loss_grad(self, theta: torch.Tensor, l2: float) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Objective (summed in float64), gradient (C, D1) and softmax probabilities P (C, N)."""
        logits = self.scores(theta)  # (C, N)
        lse = torch.logsumexp(logits, 0)
        P = torch.exp(logits - lse)
        w = theta[:, :-1]
        f = (lse.double().sum() - (logits * self.Y).sum(0).double().sum()) / self.n + 0.5 * l2 * float((w.double() ** 2).sum())
        G = self.back(P - self.Y) / self.n
        G[:, :-1] += l2 * w
        return float(f), G, P

    def hess_vec(self, P: torch.Tensor, V: torch.Tensor, l2: float) -> torch.Tensor:
        """H V: per row, (diag(p) - p p^T) (V x); then X^T; plus l2 on the weights."""
        R = P * self.scores(V)  # (C, N)
        R -= P * R.sum(0, keepdim=True)
        out = self.back(R) / self.n
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


def poisson_rows(q: torch.Tensor, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """About m rows, each drawn independently with probability pi = min(1, c q) (sum of pi = m), and their
    weights 1 / pi (unbiased sums). Rows with the largest q are taken for certain, unlike drawing m
    with replacement. q (N,) float64, summing to 1."""
    n = len(q)
    if n <= m:
        return torch.arange(n, device=q.device), torch.ones(n, dtype=q.dtype, device=q.device)
    qs = q.topk(m).values  # the m largest, descending (a full sort took 3x as long)
    tail = q.sum() - (qs.cumsum(0) - qs)  # tail[j]: the mass outside the j largest
    c = (m - torch.arange(m, dtype=q.dtype, device=q.device)) / tail.clamp_min(1e-300)  # c if the j largest are capped at 1
    fits = (c * qs <= 1).nonzero()
    c_ok = float(c[int(fits[0])]) if len(fits) else float(c[-1])
    pi = (c_ok * q).clamp(max=1.0)
    rows = (torch.rand(n, generator=gen, dtype=q.dtype).to(q.device) < pi).nonzero().flatten()
    return rows, 1.0 / pi[rows]


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """The BLAS libraries loaded, found once: ``threadpool_limits`` looks them up at each call (~2 ms, 0.26 s of
    a fashion-mnist probe's 90 Gram blocks); the controller's ``limit`` costs ~0.03 ms."""
    return ThreadpoolController()


def gram(Z: torch.Tensor) -> torch.Tensor:
    """Z^T Z in float64. With one CPU thread through BLAS syrk (one triangle: half a GEMM's work, 1.7x
    faster here); otherwise torch's GEMM, whose threads are torch's own (OpenBLAS threads beside torch's
    OpenMP ones on the same cores were 2.5x slower than either alone)."""
    if Z.device.type != "cpu" or Z.dtype != torch.float32 or torch.get_num_threads() > 1:
        return (Z.T @ Z).double()
    with _blas_controller().limit(limits=1, user_api="blas"):
        lower = torch.from_numpy(blas.ssyrk(1.0, Z.numpy().T, trans=0, lower=1)).double()
    return lower.tril() + lower.tril(-1).T


def class_blocks(prob: "LogReg", P: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    """Per class a, sum_r p_ra (1 - p_ra) x_r x_r^T / N: (C, D1, D1), float64. Each from about m rows drawn
    with probability ~ p_ra (1 - p_ra) ||x_r||^2 (the rows that carry class a's curvature), reweighted to stay unbiased."""
    xn = (prob.X * prob.X).sum(1).double()
    blocks = []
    for a in range(prob.c):
        s = (P[a] * (1 - P[a])).double()
        q = s * xn + 1e-300
        rows, inv = poisson_rows(q / q.sum(), m, gen)
        w = (s[rows] * inv / prob.n).to(prob.X.dtype).sqrt_()
        blocks.append(gram(prob.X.index_select(0, rows).mul_(w[:, None])))
    return torch.stack(blocks)


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
    Hessian (every class-class and feature-feature coupling) from one importance-sampled set of
    rows; above, one (D + 1)^2 block per class (the class coupling dropped: on 512-d features this
    needed fewer CG steps than keeping it per principal direction, and a full Hessian from the same
    rows did not need fewer), each from ``rows`` rows of its own (``class_blocks``): the rows that
    carry class a's curvature p_a (1 - p_a) differ from class to class, and with a shared sample the
    weak-L2 fits needed 5-10x more CG steps. The Hessian's null directions (a shift shared by all
    classes) get an identity block, so M is definite.
    """

    def __init__(self, prob: LogReg, P: torch.Tensor, gen: torch.Generator, rows: int):
        c, d1 = prob.c, prob.d1
        self.full, self.l2, self.shape, self.rows = c * d1 <= FULL_HESSIAN_MAX, None, (c, d1), min(rows, prob.n)
        self.stale = False  # set when the solver wants a new one built (its rows stay the next one's start)
        if self.full:
            idx, w = sampled_rows(prob, P, gen)
            blocks = hessian_rows(prob.X[idx], P[:, idx].T, w.to(P.dtype))
            H = torch.zeros(c, d1, c, d1, dtype=torch.float64, device=P.device)
            for a, B in enumerate(blocks):
                B = B.double()
                H[a, :, a:, :] = B
                H[a + 1:, :, a, :] = B[:, 1:, :].permute(1, 2, 0)
            H.diagonal(dim1=1, dim2=3).add_(1.0 / c)  # + (1 1^T / C) kron I: the null directions
            self.data = H.reshape(c * d1, c * d1)
        else:
            self.data = class_blocks(prob, P, self.rows, gen)  # (C, D1, D1)
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
           precond: Optional[Preconditioner] = None, rows: Optional[int] = None
           ) -> tuple[torch.Tensor, float, int, Optional[Preconditioner]]:
    """Newton-CG with a backtracking (Armijo) line search and Levenberg-Marquardt damping, until
    max|grad| <= tol or max_iter steps.

    Returns (theta, max|grad|, Newton steps, the last preconditioner: the next grid value starts
    from it if its l2 is near, else from a fresh one built at its own starting point with as many
    rows; without one, the first is built from ``rows`` rows, default SAMPLE_ROWS). A step is also accepted when it
    lowers max|grad| without raising the objective beyond rounding: near the optimum, float32
    cannot resolve the objective's decrease but still the gradient's. The preconditioner is rebuilt
    after a Newton step that needed more than REBUILD_AFTER_CG CG steps (about what a build costs),
    per-class blocks from twice the rows.

    Damping: where the gradient points along directions of almost no curvature (weak L2, and rows
    predicted confidently wrong, as a refit's new rows can be), the Newton step is orders of
    magnitude too long and the line search ends at tiny steps. Then the next directions solve
    (H + mu I) d = -g with mu ~ l2 / step (the curvature that would have made that step a full one),
    raised 10x after a step shortened below 1/4, lowered 10x after a full one (to 0 below 10 l2); a
    line search that fails raises it 100x.
    The objective and its optimum do not change, only the path. The loop stops early only when
    even a fresh preconditioner and mu above MAX_DAMPING give no progress (the precision's floor).
    """
    theta = sum_zero(theta)
    f, G, P = prob.loss_grad(theta, l2)
    gmax, fresh, it, mu = float(G.abs().max()), False, 0, 0.0
    rows = precond.rows if precond is not None else (rows or SAMPLE_ROWS)
    if precond is not None and (precond.stale or not precond.close_to(l2)):  # e.g. a 10x step along the grid: build afresh here
        precond.stale = True
    rounding = 10 * torch.finfo(theta.dtype).eps  # relative noise of the objective's per-row terms
    built = False
    while gmax > tol and it < max_iter:
        it += 1
        if precond is None or precond.stale:
            rows = min(2 * rows, prob.n) if built else rows  # a rebuild within this fit: a larger sample
            precond, fresh, built = Preconditioner(prob, P, gen, rows=rows), True, True
        d, cg_steps = conjugate_gradient(prob, P, G, l2 + mu, precond.factor(l2 + mu), floor=0.1 * tol)
        slope, step = float((G * d).sum()), 1.0
        while True:
            f2, G2, P2 = prob.loss_grad(theta + step * d, l2)
            g2 = float(G2.abs().max())
            ok = f2 <= f + 1e-4 * step * slope or (g2 < gmax and f2 <= f + rounding * abs(f))
            if ok or step < 1e-4:
                break
            step *= 0.5
        if not ok:  # no progress along this direction: damp harder, then (damped enough) a fresh preconditioner
            if mu < MAX_DAMPING:
                mu = max(100 * mu, l2 / step)
                continue
            if fresh:
                break
            precond.stale, mu = True, 0.0
            continue
        theta, f, G, P, gmax = theta + step * d, f2, G2, P2, g2
        fresh = False
        mu = max(10 * mu, l2 / step) if step < 0.25 else (0.0 if mu < 10 * l2 else mu / 10) if step == 1.0 else mu
        if cg_steps > REBUILD_AFTER_CG:
            precond.stale = True
    return theta, gmax, it, precond


def to_theta(params: Params) -> torch.Tensor:
    return torch.cat([params[0].T, params[1][:, None]], 1)


def from_theta(theta: torch.Tensor) -> Params:
    return theta[:, :-1].T.contiguous(), theta[:, -1].contiguous()


def solve(prob: LogReg, *, l2: float, max_iter: int, tol: float, init: Optional[Params],
          precond: Optional[Preconditioner] = None, rows: Optional[int] = None) -> tuple[Params, float, Optional[Preconditioner]]:
    """Minimise ``objective`` on prob to max|grad| <= tol (at most max_iter Newton steps).

    Returns (W, b), max|grad| and the last preconditioner (pass it to the next warm-started fit, or its
    ``rows`` to a fit of a related problem).
    """
    theta = to_theta(init).to(prob.X.dtype) if init else prob.X.new_zeros(prob.c, prob.d1)
    gen = torch.Generator().manual_seed(0)  # the preconditioner's rows: the fit stays deterministic
    theta, gmax, it, precond = newton(prob, theta, l2, tol=tol, max_iter=max_iter, gen=gen, precond=precond, rows=rows)
    if gmax > tol and it < max_iter and prob.X.dtype != torch.float64:  # float32's floor: finish in float64
        theta, gmax, _, _ = newton(prob.double(), theta.double(), l2, tol=tol, max_iter=max_iter - it, gen=gen)
    return from_theta(theta.to(prob.X.dtype)), gmax, precond


def fit_logreg(x: torch.Tensor, y: torch.Tensor, *, l2: float, num_classes: int, max_iter: int,
               init: Optional[Params] = None, tol: float = 1e-6, rows: Optional[int] = None) -> Params:
    """Minimise ``objective`` on (x, y) to max|grad| <= tol, from init (warm start) or zero; ``rows``: the
    preconditioner's first sample size (what a fit of a related problem ended with)."""
    return solve(LogReg(x, y, num_classes), l2=l2, max_iter=max_iter, tol=tol, init=init, rows=rows)[0]


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
              ) -> tuple[float, dict[float, float], Params, float, int]:
    """Val top-1 for each l2, strongest first with warm starts; best l2 (ties: stronger), its fit, the
    largest max|grad| over the grid's fits and the preconditioner's sample size at the chosen fit."""
    prob = LogReg(x_tr, y_tr, num_classes)
    curve: dict[float, float] = {}
    fits: dict[float, tuple[Params, int]] = {}
    params: Optional[Params] = None
    worst, precond = 0.0, None
    for l2 in sorted(grid, reverse=True):
        params, gmax, precond = solve(prob, l2=l2, max_iter=max_iter, tol=tol, init=params, precond=precond)
        rows = precond.rows if precond is not None else SAMPLE_ROWS  # None: converged at its start, nothing built
        fits[l2], curve[l2], worst = (params, rows), accuracy(params, x_val, y_val), max(worst, gmax)
    best = max(curve.values())
    chosen = max(l2 for l2, acc in curve.items() if acc == best)
    return chosen, curve, *fits[chosen], worst


@PROBES.register("linear")
def linear_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = (features.tensors(s, device=device) for s in ("train", "val", "test"))
    grid = [float(v) for v in params["l2_grid"]]
    max_iter, tol, c = int(params["max_iter"]), float(params.get("tol", 1e-6)), features.num_classes
    x_trval = torch.cat([x_tr, x_val])
    sel, ref = moments(x_tr), moments(x_trval)  # selection statistics: train only; refit: train + val
    xs_tr, xs_val = ((x - sel[0]) / sel[1] for x in (x_tr, x_val))
    l2, curve, chosen_fit, rows, grid_grad = select_l2(xs_tr, y_tr, xs_val, y_val, grid=grid, num_classes=c,
                                                       max_iter=max_iter, tol=tol)
    x_all, x_test = ((x - ref[0]) / ref[1] for x in (x_trval, x_test))
    y_all = torch.cat([y_tr, y_val])
    final = fit_logreg(x_all, y_all, l2=l2, num_classes=c, max_iter=max_iter, tol=tol, rows=rows,
                       init=restandardise(chosen_fit, sel, ref))  # warm start: the chosen fit's function
    refit_grad = grad_norm(tuple(p.double() for p in final), x_all.double(), y_all, l2=l2)  # checked in float64
    details = {"l2": l2, "val_top1": curve[l2], "l2_at_grid_edge": l2 in (min(grid), max(grid)),
               "refit_grad_max": refit_grad, "grid_grad_max": grid_grad,
               "val_curve": {f"{k:g}": v for k, v in sorted(curve.items())}}
    predictions = Predictions(y_test.cpu().numpy(), {"top1": predict(final, x_test).cpu().numpy()})
    return ProbeResult({"top1": accuracy(final, x_test, y_test)}, details, predictions)
