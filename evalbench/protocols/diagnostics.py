"""Representation diagnostics on frozen features (diagnostics@1): why a checkpoint fails.

Computed on a deterministic subsample (at most ``max_samples`` rows, a fixed CPU generator
seeded by ``subsample_seed``, independent of the run's seed) of train + val + test pooled:
nothing is fitted or chosen here, so no split is held out, and pooling gives small tasks
(digits: 359 test images) a larger, steadier sample of the same encoder on the same data.

* ``collapse_std`` (SimSiam, Chen & He 2021, Sec. 4.1 / Fig. 2; lightly
  ``utils/debug.py::std_of_l2_normalized``): per-dimension sample std (ddof 1) of the
  L2-normalised features, averaged over dimensions, times sqrt(D). ~1 when the features are
  spread like an isotropic Gaussian, 0 at complete collapse. Pooled ReLU features share a mean
  direction, so healthy backbones sit well below 1 (random-init CNNs on digits/MNIST: 0.08-0.17).
* ``effective_rank`` (Roy & Vetterli 2007; RankMe, Garrido et al. 2023): exp of the Shannon
  entropy of p_k = s_k / sum(s) over the singular values s of the centred feature matrix, in
  [1, min(n, D)]; 1.0 by convention when the centred matrix is zero (no variation at all).
  ``effective_rank_ratio`` = effective_rank / D. Scale-free: it says how many directions the
  variation uses, not how large the variation is.
* ``uniformity`` (Wang & Isola 2020, eq. 5; SsnL/align_uniform ``uniform_loss``):
  log of the mean over all pairs i < j of exp(-t ||f_i - f_j||^2), L2-normalised features;
  in [-4t, 0], lower = more uniform on the sphere, 0 at collapse.
* ``alignment_class``: mean ||f_i - f_j||^2 (alpha = 2) over all pairs i < j with the SAME label,
  L2-normalised features. Wang & Isola's alignment (``align_loss``) is over augmented views of
  one image; frozen single-view features have no such pairs, so this is the class-conditional
  version, named for what it is. Exact over all same-label pairs of the subsample in O(nD):
  for a class with unit vectors f_1..f_m and sum s, sum_{i<j} ||f_i - f_j||^2 = m^2 - ||s||^2.
* ``collapsed``: 1.0 when either (a) the features are constant: the largest per-dimension std
  of the raw features is <= ``constant_tol`` x their RMS (all-zero features count), i.e. the
  output does not depend on the input; or (b) ``collapse_std`` < ``collapse_std_threshold``:
  almost all of the normalised features' energy is one shared direction (near-collapse; a
  heuristic threshold, see protocols/diagnostics.yaml; it flags clear collapse only: ReLU features
  of an informative random-init CNN sit in a cone and score 0.05-0.15, timm:resnet18 with random
  weights at 32 px sees only the top-left 6x6 pixels, background on digits/MNIST, and scores
  0.003-0.045, flagged where it is 0.003).
  The effective rank is not part of it: it is scale-free (identical features plus float noise
  have a high one) and a clean two-cluster representation legitimately has one near 1.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from evalbench.core.errors import EvalbenchError
from evalbench.core.validate import NonNegFloat, PositiveFloat, Seed
from evalbench.features.artifact import Features
from evalbench.protocols.base import PARAMS, PROBES, ProbeParams, ProbeResult

SPLIT_ORDER = ("train", "val", "test")


@PARAMS.register("diagnostics")
class DiagnosticsParams(ProbeParams):
    max_samples: Annotated[int, Field(ge=2, description="an integer >= 2 (rows of the subsample)")]
    subsample_seed: Seed
    uniformity_t: PositiveFloat
    collapse_std_threshold: NonNegFloat
    constant_tol: NonNegFloat


def subsample(n: int, max_samples: int, *, seed: int) -> torch.Tensor:
    """Sorted indices of at most ``max_samples`` of ``range(n)``, the same on every machine and device."""
    if n <= max_samples:
        return torch.arange(n)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:max_samples].sort().values


def collapse_std(x: torch.Tensor) -> float:
    """SimSiam's std of L2-normalised features (N, D), averaged over dimensions, times sqrt(D)."""
    z = F.normalize(x.double(), dim=1)  # all-zero rows stay zero
    return float(z.std(dim=0).mean() * math.sqrt(x.shape[1]))


def effective_rank(x: torch.Tensor, *, zero_tol: float = 1e-12) -> float:
    """exp(entropy of s / sum(s)), s the singular values of the centred (N, D) matrix (1.0 if it is ~0)."""
    xc = x.double() - x.double().mean(0)
    gram = xc.T @ xc if xc.shape[1] <= xc.shape[0] else xc @ xc.T  # the smaller Gram: same nonzero s^2
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    scale = x.double().norm()
    if scale == 0 or s.sum() <= zero_tol * scale:
        return 1.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def uniformity(x: torch.Tensor, *, t: float, chunk: int = 2048) -> float:
    """log mean_{i<j} exp(-t ||z_i - z_j||^2), z = L2-normalised x; blocks of chunk x chunk, upper triangle only."""
    z = F.normalize(x.float(), dim=1)
    n = len(z)
    log_total = torch.tensor(float("-inf"), dtype=torch.float64, device=z.device)  # log sum exp, kept in log space
    for i in range(0, n, chunk):
        for j in range(i, n, chunk):
            sq = (2 - 2 * z[i:i + chunk] @ z[j:j + chunk].T).clamp_min(0)  # (bi, bj) squared distances
            v = -t * sq.double()
            if i == j:  # diagonal block: pairs i < j only
                v = v.masked_fill(~torch.ones_like(v, dtype=torch.bool).triu(diagonal=1), float("-inf"))
            log_total = torch.logaddexp(log_total, v.flatten().logsumexp(0))
    return float(log_total - math.log(n * (n - 1) / 2))


def alignment_class(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """Mean ||z_i - z_j||^2 over same-label pairs i < j (z = L2-normalised x), and the number of pairs."""
    z = F.normalize(x.double(), dim=1)
    classes, y_idx = y.unique(return_inverse=True)
    sums = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y_idx, z)
    sq_norms = torch.zeros(len(classes), dtype=z.dtype, device=z.device).index_add_(0, y_idx, (z * z).sum(1))
    counts = torch.bincount(y_idx, minlength=len(classes)).double()
    # per class: sum_{i<j} ||z_i - z_j||^2 = m * sum ||z_i||^2 - ||sum z_i||^2 (= m^2 - ||s||^2 for unit rows)
    pair_sums = (counts * sq_norms - (sums * sums).sum(1)).clamp_min(0)  # >= 0 but for rounding at collapse
    pairs = int((counts * (counts - 1) / 2).sum())
    if pairs == 0:
        raise EvalbenchError("diagnostics: no two sampled features share a label, so alignment_class is undefined; "
                             "raise the protocol's max_samples")
    return float(pair_sums.sum() / pairs), pairs


def is_constant(x: torch.Tensor, *, tol: float) -> bool:
    """Whether every dimension's std over samples is <= tol x the RMS of the features (all zero included)."""
    x = x.double()
    return bool(x.std(dim=0).max() <= tol * x.pow(2).mean().sqrt())


@PROBES.register("diagnostics")
def diagnostics_probe(features: Features, *, params: dict, seed, device: torch.device) -> ProbeResult:
    splits = [s for s in SPLIT_ORDER if s in features.x] + sorted(set(features.x) - set(SPLIT_ORDER))
    x_all, y_all = features.tensors(*splits, device=device)
    idx = subsample(len(x_all), int(params["max_samples"]), seed=int(params["subsample_seed"])).to(x_all.device)
    x, y = x_all[idx], y_all[idx]
    if len(x) < 2:
        raise EvalbenchError(f"diagnostics: {len(x)} feature vector(s); at least 2 are needed")
    std_threshold, tol = float(params["collapse_std_threshold"]), float(params["constant_tol"])
    metrics = {"collapse_std": collapse_std(x), "effective_rank": effective_rank(x)}
    metrics["effective_rank_ratio"] = metrics["effective_rank"] / x.shape[1]
    metrics["uniformity"] = uniformity(x, t=float(params["uniformity_t"]))
    metrics["alignment_class"], pairs = alignment_class(x, y)
    reasons = (["constant features"] if is_constant(x, tol=tol) else []) + (
        [f"collapse_std < {std_threshold:g}"] if metrics["collapse_std"] < std_threshold else [])
    metrics["collapsed"] = 1.0 if reasons else 0.0
    details = {"n_samples": len(x), "n_available": len(x_all), "splits": splits, "dim": int(x.shape[1]),
               "same_label_pairs": pairs, "collapse_reasons": reasons,
               "thresholds": {"collapse_std_threshold": std_threshold, "constant_tol": tol}}
    return ProbeResult(metrics, details)
