"""The linear probe's CG work under other preconditioners (issue 10, the 512-d linear target): a record of
what was tried, runnable. Counts CG steps (one Hessian-vector product each: the solver's unit of work,
independent of the machine's load), Newton steps and preconditioner builds of ``linear_probe`` on the
cached features of benchmarks/run_all.py, with the preconditioner replaced by:

* ``default``: linear.py's own (full sampled Hessian while C (D + 1) <= 3072, else one block per class);
* ``kron``: a Kronecker-factored Hessian G (C x C) x A (D+1 x D+1), the nearest Kronecker product to the
  sampled Hessian (Van Loan & Pitsianis 1993; two alternating refinements from A = X^T W X), inverted
  exactly with the penalty through G's eigendecomposition (one Cholesky of lambda_g A + l2 I per
  eigenvalue), as K-FAC (Martens & Grosse 2015) for a softmax layer;
* ``split``: the full sampled Hessian (all class couplings) on the top-K principal directions of the
  features (+ the bias), one block per class on the others (K from --top).

    .venv/bin/python benchmarks/linear_preconditioners.py small-cnn kron
    .venv/bin/python benchmarks/linear_preconditioners.py resnet18 split --top 128

Measured (this session, 1 thread; fashion-mnist features, protocols/linear.yaml 7-point grid + refit):
small-cnn (55000 x 128): default 247 CG steps, kron 2588; resnet18 (55000 x 512): default ~2900 (README),
split K=128 3446. Same chosen L2, test top-1 and converged gradients in every case; only the work differs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import evalbench.protocols.linear as L
from evalbench.features.artifact import Features
from evalbench.specs.protocol import resolve_protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import counting_cg  # noqa: E402  (the CG-step counter the scale study uses)

TOP = 128
class KronPreconditioner:
    def __init__(self, prob, P, gen, rows=L.SAMPLE_ROWS, iters=2):
        c, d1 = prob.c, prob.d1
        self.rows, self.stale = rows, False  # what the solver reads of a preconditioner (rows: unused here)
        rows, w = L.sampled_rows(prob, P, gen)
        Z, Pr, w = prob.X[rows].double(), P[:, rows].T.double(), w.double()   # (m, D1), (m, C), (m,)
        A = (Z * w[:, None]).T @ Z  # (D1, D1)
        for _ in range(iters):
            s = ((Z @ A) * Z).sum(1) * w  # (m,) <A, z z^T> w
            G = torch.diag((Pr * s[:, None]).sum(0)) - (Pr * s[:, None]).T @ Pr
            G /= float((A * A).sum())
            t = ((Pr * G.diagonal()[None]).sum(1) - ((Pr @ G) * Pr).sum(1)) * w  # <G, M_r> w
            A = (Z * t[:, None]).T @ Z / float((G * G).sum())
        self.G, self.A, self.shape, self.l2 = G, A, (c, d1), None
        lam, Q = torch.linalg.eigh(G)
        self.lam, self.Q = lam, Q

    def close_to(self, l2):
        return self.l2 is not None and 1 / L.NEAR_RATIO <= l2 / self.l2 <= L.NEAR_RATIO

    def factor(self, l2):
        if not self.close_to(l2):
            c, d1 = self.shape
            pen = torch.full((d1,), l2, dtype=torch.float64); pen[-1] = 0
            lam = self.lam.clamp_min(0)
            null = lam < 1e-8 * float(lam.max())
            M = lam[:, None, None] * self.A[None] + torch.diag(pen)[None]
            M[null] = torch.eye(d1, dtype=torch.float64)
            self.L = L.cholesky(M)
            self.l2 = l2
        return self

    def __call__(self, g):
        V = self.Q.T @ g.double()  # (C, D1) in G's eigenbasis
        X = torch.cholesky_solve(V[:, :, None], self.L)[:, :, 0]
        return L.sum_zero((self.Q @ X).to(g.dtype))


def pca_basis(prob):
    if getattr(prob, '_U', None) is None:
        Xd = prob.X[:, :-1]
        cov = (Xd.T @ Xd).double()
        lam, U = torch.linalg.eigh(cov)
        prob._U = U.flip(1).to(prob.X.dtype)  # (D, D), descending variance
    return prob._U

class SplitPreconditioner:
    def __init__(self, prob, P, gen, rows=L.SAMPLE_ROWS):
        c, d1 = prob.c, prob.d1
        self.rows, self.stale = rows, False  # what the solver reads of a preconditioner (rows: unused here)
        U = pca_basis(prob)
        k = min(TOP, d1 - 1)
        rows, w = L.sampled_rows(prob, P, gen)
        Zr = prob.X[rows]
        Zrot = Zr[:, :-1] @ U  # (m, D) in PCA basis
        Zs = torch.cat([Zrot[:, :k], Zr[:, -1:]], 1)  # (m, k+1)
        Zc = Zrot[:, k:]  # (m, D-k)
        Pr, w = P[:, rows].T, w.to(P.dtype)
        ks = k + 1
        H = torch.zeros(c, ks, c, ks, dtype=torch.float64)
        for a, B in enumerate(L.hessian_rows(Zs, Pr, w)):
            B = B.double()
            H[a, :, a:, :] = B
            H[a + 1:, :, a, :] = B[:, 1:, :].permute(1, 2, 0)
        H.diagonal(dim1=1, dim2=3).add_(1.0 / c)
        self.Hs = H.reshape(c * ks, c * ks)
        self.Hc = torch.stack([B[:, 0, :].double() for B in L.hessian_rows(Zc, Pr, w, upto=1)]) if d1 - 1 > k else None
        self.U, self.k, self.shape, self.l2 = U, k, (c, d1), None

    def close_to(self, l2):
        return self.l2 is not None and 1 / L.NEAR_RATIO <= l2 / self.l2 <= L.NEAR_RATIO

    def factor(self, l2):
        if not self.close_to(l2):
            c, d1 = self.shape
            pen = torch.full((c, self.k + 1), l2, dtype=torch.float64); pen[:, -1] = 0
            self.Ls = L.cholesky(self.Hs + torch.diag(pen.reshape(-1)))
            if self.Hc is not None:
                self.Lc = L.cholesky(self.Hc + l2 * torch.eye(self.Hc.shape[-1], dtype=torch.float64))
            self.l2 = l2
        return self

    def __call__(self, g):
        c, d1 = self.shape
        k = self.k
        grot = g[:, :-1] @ self.U  # (C, D)
        gs = torch.cat([grot[:, :k], g[:, -1:]], 1).double()
        xs = torch.cholesky_solve(gs.reshape(-1, 1), self.Ls).reshape(c, k + 1)
        out = torch.empty(c, d1 - 1, dtype=torch.float64)
        out[:, :k] = xs[:, :k]
        if self.Hc is not None:
            out[:, k:] = torch.cholesky_solve(grot[:, k:].double()[:, :, None], self.Lc)[:, :, 0]
        res = torch.cat([out.to(g.dtype) @ self.U.T, xs[:, -1:].to(g.dtype)], 1)
        return L.sum_zero(res)


def main() -> int:
    global TOP
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("encoder", choices=["small-cnn", "resnet18"])
    ap.add_argument("preconditioner", choices=["default", "kron", "split"])
    ap.add_argument("--top", type=int, default=TOP, help="split: principal directions with full class coupling")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalbench-bench")
    args = ap.parse_args()
    TOP = args.top
    torch.set_num_threads(args.threads)
    z = np.load(args.cache / f"fashion-mnist--{args.encoder}.npz")
    splits = ("train", "val", "test")
    f = Features({s: z[f"x_{s}"] for s in splits}, {s: z[f"y_{s}"] for s in splits}, int(z["num_classes"]))
    builds = {"builds": 0}
    base = {"default": L.Preconditioner, "kron": KronPreconditioner, "split": SplitPreconditioner}[args.preconditioner]
    if args.preconditioner != "default":
        L.FULL_HESSIAN_MAX = 0

    class Counting(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            builds["builds"] += 1
            super().__init__(*a, **k)

    L.Preconditioner = Counting
    t0 = time.perf_counter()
    with counting_cg() as counts:
        r = L.linear_probe(f, params=dict(resolve_protocol("linear").params), seed=0, device=torch.device("cpu"))
    stats = {**counts, **builds}
    print(f"{args.encoder} {args.preconditioner}: {time.perf_counter() - t0:.1f} s (load {os.getloadavg()[0]:.1f}), {stats}, "
          f"top-1 {r.metrics['top1']:.4f}, l2 {r.details['l2']:g}, refit max|grad| {r.details['refit_grad_max']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
