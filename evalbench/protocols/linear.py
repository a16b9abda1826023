"""Linear probe on frozen features (linear@1).

Multinomial logistic regression trained full-batch with L-BFGS on cached, non-augmented
features, the protocol of Kornblith et al. 2019 ("Do Better ImageNet Models Transfer
Better?") and CLIP's linear-probe evaluation (openai/CLIP README, sklearn LogisticRegression
with the L2 strength swept on a validation split). Features are standardised with training
statistics. The L2 strength is chosen on val from a log grid (ties: the stronger one), then
the model is refit on train + val and test top-1 is reported with the chosen value.

Objective: mean cross-entropy + (l2 / 2) * ||W||^2 (bias unregularised); this equals
scikit-learn's LogisticRegression with C = 1 / (l2 * n_train) for 3 or more classes (for two
classes scikit-learn fits one weight vector, and C = 2 / (l2 * n_train)).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from evalbench.features.artifact import Features
from evalbench.protocols.base import PROBES, ProbeResult

Params = tuple[torch.Tensor, torch.Tensor]  # W (D, C), b (C,)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def objective(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, l2: float) -> torch.Tensor:
    """Mean cross-entropy of logits x @ w + b (N, C) plus (l2 / 2) ||w||^2; the bias is unregularised."""
    return F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()


def fit_logreg(x: torch.Tensor, y: torch.Tensor, *, l2: float, num_classes: int, max_iter: int,
               init: Optional[Params] = None) -> Params:
    """Full-batch L-BFGS (strong Wolfe line search) on the regularised multinomial loss."""
    w = (init[0].clone() if init else x.new_zeros(x.shape[1], num_classes)).requires_grad_(True)
    b = (init[1].clone() if init else x.new_zeros(num_classes)).requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective(w, b, x, y, l2=l2)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def grad_norm(params: Params, x: torch.Tensor, y: torch.Tensor, *, l2: float) -> float:
    """Max-abs gradient of the objective at params: ~0 when L-BFGS converged (a record of it)."""
    w, b = (p.clone().requires_grad_(True) for p in params)
    gw, gb = torch.autograd.grad(objective(w, b, x, y, l2=l2), (w, b))
    return float(torch.cat([gw.flatten(), gb]).abs().max())


def accuracy(params: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x @ params[0] + params[1]).argmax(1) == y).float().mean())


def select_l2(x_tr: torch.Tensor, y_tr: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
              grid: list[float], num_classes: int, max_iter: int) -> tuple[float, dict[float, float], Params]:
    """Val top-1 for each l2, strongest first with warm starts; best l2 (ties: stronger) and its fit."""
    curve: dict[float, float] = {}
    fits: dict[float, Params] = {}
    params: Optional[Params] = None
    for l2 in sorted(grid, reverse=True):
        params = fits[l2] = fit_logreg(x_tr, y_tr, l2=l2, num_classes=num_classes, max_iter=max_iter, init=params)
        curve[l2] = accuracy(params, x_val, y_val)
    best = max(curve.values())
    chosen = max(l2 for l2, acc in curve.items() if acc == best)
    return chosen, curve, fits[chosen]


@PROBES.register("linear")
def linear_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test) = (features.tensors(s, device=device) for s in ("train", "val", "test"))
    grid = [float(v) for v in params["l2_grid"]]
    max_iter, c = int(params["max_iter"]), features.num_classes
    xs_tr, xs_val = standardise(x_tr, x_val)  # selection statistics: train only
    l2, curve, chosen_fit = select_l2(xs_tr, y_tr, xs_val, y_val, grid=grid, num_classes=c, max_iter=max_iter)
    x_all, x_test = standardise(torch.cat([x_tr, x_val]), x_test)  # refit statistics: train + val
    y_all = torch.cat([y_tr, y_val])
    final = fit_logreg(x_all, y_all, l2=l2, num_classes=c, max_iter=max_iter, init=chosen_fit)  # warm start
    details = {"l2": l2, "val_top1": curve[l2], "l2_at_grid_edge": l2 in (min(grid), max(grid)),
               "refit_grad_max": grad_norm(final, x_all, y_all, l2=l2),
               "val_curve": {f"{k:g}": v for k, v in sorted(curve.items())}}
    return ProbeResult({"top1": accuracy(final, x_test, y_test)}, details)
