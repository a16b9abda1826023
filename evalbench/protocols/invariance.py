"""Rotation prediction and invariance scores on frozen features (rotation@1, invariance@1).

``rotation``: the features of the ``rotation`` view (each image at 0/90/180/270 degrees, labelled by
its rotation; Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting Image
Rotations") go through the linear probe of ``linear`` (protocols/linear.py): fit on rotated train
images, L2 chosen on rotated val, test top-1 on rotated test images (chance 25%). Beside it,
``invariance``: the mean cosine similarity between the features of a test image and of its three
rotations; an encoder that ignores rotation scores ~25% and invariance ~1.

``invariance``: the same score for the transforms SSL augmentations target (the
``invariance_panel`` view: horizontal flip, centre crop of half the area, brightness/contrast,
blur), one metric per transform (cf. Ericsson et al. 2022, "Why Do Self-Supervised Models
Transfer? Investigating the Impact of Invariance on Downstream Tasks").

Cosine similarity of raw features is high even between different images (ReLU features lie in a
cone), so details carry the baseline: the mean cosine between the features of different test images
(image i with a fixed random other image), and the score rescaled so the baseline is 0 and perfect
invariance 1. Intervals: percentile bootstrap over test images (protocols/bootstrap.py).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from evalbench.core.errors import ConfigError
from evalbench.core.validate import Seed
from evalbench.data.views import VIEWS
from evalbench.features.artifact import Features
from evalbench.protocols.base import PARAMS, PROBES, ProbeParams, ProbeResult
from evalbench.protocols.bootstrap import bootstrap_means, percentile_interval
from evalbench.protocols.linear import LinearParams, linear_probe


def copies(features: Features, split: str, *, device: torch.device) -> tuple[tuple[str, ...], torch.Tensor]:
    """The names of the view's copies and the split's features as (copies, N, D): [r, i] is copy r of image i."""
    view = str(features.meta.get("view", "identity"))
    names = VIEWS.get(view).copies
    if not names:
        raise ConfigError(f"these features come from view {view!r}, which makes no copies of an image; the protocol "
                          "needs a view of copies (`view: rotation` or `view: invariance_panel` in its YAML)")
    x, _ = features.tensors(split, device=device)
    assert len(x) % len(names) == 0, (len(x), names)
    return names, x.reshape(len(names), len(x) // len(names), -1)


def scores_with_baseline(x: torch.Tensor, *, seed: int) -> tuple[np.ndarray, float]:
    """(copies, N, D) -> per (copy >= 1, image) cosine with copy 0 of the same image (copies - 1, N), and the
    mean cosine between copy 0 of image i and of a fixed random other image (the different-image baseline)."""
    z = F.normalize(x.double(), dim=-1)
    same = (z[1:] * z[:1]).sum(-1)
    n = z.shape[1]
    gen = torch.Generator().manual_seed(seed)
    other = (torch.arange(n) + torch.randint(1, max(2, n), (n,), generator=gen)) % n  # never i itself (n > 1)
    baseline = float((z[0] * z[0, other.to(z.device)]).sum(-1).mean())
    return same.cpu().numpy(), baseline


def invariance_metrics(x: torch.Tensor, names: tuple[str, ...], groups: dict[str, list[int]], *,
                       seed: int) -> tuple[dict, dict, dict]:
    """metric -> mean score over the copies in ``groups`` (indices into names[1:]) and images; intervals
    (bootstrap over images); details (baseline, rescaled scores)."""
    same, baseline = scores_with_baseline(x, seed=seed)
    per_image = {m: same[idx].mean(0) for m, idx in groups.items()}  # (N,) per metric
    metric_names = list(per_image)
    bounds = percentile_interval(bootstrap_means(np.stack([per_image[m] for m in metric_names])))
    metrics = {m: float(per_image[m].mean()) for m in metric_names}
    intervals = {m: [float(lo), float(hi)] for m, (lo, hi) in zip(metric_names, bounds)}
    scale = 1 - baseline if abs(1 - baseline) > 1e-12 else float("nan")
    details = {"invariance_baseline": baseline,
               "invariance_rescaled": {m: (v - baseline) / scale for m, v in metrics.items()},
               "copies": list(names), "images": int(x.shape[1])}
    return metrics, intervals, details


@PARAMS.register("rotation")
class RotationParams(LinearParams):
    """The linear probe's params (l2_grid, max_iter, tol), plus the seed of the baseline's pairs."""

    baseline_seed: Seed = 0


@PROBES.register("rotation")
def rotation_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    names, x = copies(features, "test", device=device)
    lin_params = {k: v for k, v in params.items() if k != "baseline_seed"}
    lin = linear_probe(features, params=lin_params, seed=seed, device=device)
    inv, inv_ci, inv_details = invariance_metrics(x, names, {"invariance": list(range(len(names) - 1))},
                                                  seed=int(params.get("baseline_seed", 0)))
    metrics = {**lin.metrics, **inv}
    return ProbeResult(metrics, {**lin.details, **inv_details, "chance": 1 / len(names)}, lin.predictions, inv_ci)


@PARAMS.register("invariance")
class InvarianceParams(ProbeParams):
    baseline_seed: Seed = 0


@PROBES.register("invariance")
def invariance_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    names, x = copies(features, "test", device=device)
    groups = {f"invariance_{n}": [r] for r, n in enumerate(names[1:])}
    metrics, intervals, details = invariance_metrics(x, names, groups, seed=int(params.get("baseline_seed", 0)))
    return ProbeResult(metrics, details, intervals=intervals)
