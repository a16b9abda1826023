"""The SSL objectives: SimCLR's NT-Xent, MoCo's InfoNCE, BYOL's regression loss, SimSiam's
negative cosine (DESIGN.md §5). Pure functions of projections; the caller owns encoders and views.

Every loss L2-normalises with ``F.normalize`` (safe at zero vectors) and builds its softmax with
``F.cross_entropy`` (log-sum-exp inside), so no unbounded value is ever exponentiated directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(name: str, a: Tensor, b: Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{name}: expected two (N, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def nt_xent(z1: Tensor, z2: Tensor, *, temperature: float) -> Tensor:
    """SimCLR's NT-Xent loss over the 2N views, averaged over all 2N anchors.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    eq. (1); reference: google-research/simclr ``objective.py`` (``add_contrastive_loss``), which
    returns the SUM of the two halves' means (2x this value); lightly ``loss/ntx_ent_loss.py``
    averages over the 2N anchors as here.

    z1, z2: (N, D) projections of two views of the same N images; row i of z1 and row i of z2 are
    the positive pair, the other 2N - 2 vectors are the negatives.
    """
    _check_pair("nt_xent", z1, z2)
    _check_temperature(temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)          # (2N, D), unit rows
    logits = z @ z.T / temperature                                # (2N, 2N) cosine / T
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))         # an anchor is not its own negative
    # anchor i < N has its positive at i + N, anchor i >= N at i - N
    labels = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # (2N,)
    return F.cross_entropy(logits, labels)


def info_nce(q: Tensor, k: Tensor, queue: Tensor | None, *, temperature: float) -> Tensor:
    """MoCo's InfoNCE: each query against its own key (positive) and the queue's negatives.

    He et al. 2020 (MoCo) and Chen et al. 2020, "Improved Baselines with Momentum Contrastive
    Learning" (MoCo v2); reference: facebookresearch/moco ``moco/builder.py`` (``forward``):
    logits = [q.k+, q.queue] / T, label 0.

    q: (N, D) queries (gradient flows); k: (N, D) keys from the momentum encoder (detached here
    again); queue: (K, D) negatives (detached), or None for in-batch negatives as in MoCo v3
    (Chen, Xie & He 2021, facebookresearch/moco-v3 ``moco/builder.py``): logits = q @ k.T / T,
    labels arange(N), so key j != i is a negative of query i. All are L2-normalised here.
    """
    _check_pair("info_nce", q, k)
    _check_temperature(temperature)
    q = F.normalize(q, dim=1)                                     # (N, D)
    k = F.normalize(k.detach(), dim=1)                            # (N, D)
    n = q.shape[0]
    if queue is None:
        logits = q @ k.T / temperature                            # (N, N), positives on the diagonal
        labels = torch.arange(n, device=q.device)
        return F.cross_entropy(logits, labels)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce: queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
    negatives = F.normalize(queue.detach(), dim=1)                # (K, D)
    l_pos = (q * k).sum(dim=1, keepdim=True)                      # (N, 1)
    l_neg = q @ negatives.T                                       # (N, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature       # (N, 1 + K)
    labels = torch.zeros(n, dtype=torch.long, device=q.device)    # the positive is column 0
    return F.cross_entropy(logits, labels)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), mean over the N samples.

    Grill et al. 2020, "Bootstrap Your Own Latent", eq. (2); reference: deepmind-research
    ``byol/utils/helpers.py`` (``regression_loss``), used in ``byol/byol_experiment.py``.

    p: (N, D) online predictions; z: (N, D) target projections, detached here (the target network
    gets no gradient). Values lie in [0, 4]. The caller symmetrises over the two views.
    """
    _check_pair("byol_loss", p, z)
    cos = (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1)  # (N,)
    return (2 - 2 * cos).mean()


def negative_cosine(p: Tensor, z: Tensor, *, stop_gradient: bool = True) -> Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), mean over the N samples.

    Chen & He 2021, "Exploring Simple Siamese Representation Learning", eq. (1)-(3); reference:
    facebookresearch/simsiam ``simsiam/builder.py`` (z detached) with ``main_simsiam.py``'s
    ``-(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5`` (the caller symmetrises).

    p: (N, D) predictions; z: (N, D) projections. ``stop_gradient=False`` lets the gradient flow
    into z: the paper's ablation (Fig. 2), which collapses.
    """
    _check_pair("negative_cosine", p, z)
    target = z.detach() if stop_gradient else z
    cos = (F.normalize(p, dim=1) * F.normalize(target, dim=1)).sum(dim=1)  # (N,)
    return -cos.mean()
