"""diagnostics@1: each metric against an independent float64 numpy reference, its properties, and
the collapse flag on timm:resnet18 with random weights at 32 px (the example suite's baseline row).

References are written differently from the probe: np.linalg.svd for the effective rank (the probe
uses the eigenvalues of a Gram matrix), explicit double loops over pairs for uniformity and
alignment (the probe uses blocked matrix products and a per-class closed form), np.std for
collapse_std.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from evalbench.features.artifact import Features
from evalbench.protocols.base import PROBES
from evalbench.specs.protocol import resolve_protocol

PARAMS = resolve_protocol("diagnostics").params  # the shipped defaults


def normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_collapse_std(x: np.ndarray) -> float:
    return float(np.std(normalise(x), axis=0, ddof=1).mean() * np.sqrt(x.shape[1]))


def ref_effective_rank(x: np.ndarray) -> float:
    s = np.linalg.svd(x.astype(np.float64) - x.astype(np.float64).mean(0), compute_uv=False)
    p = s / s.sum()
    return float(np.exp(-sum(pk * np.log(pk) for pk in p if pk > 0)))


def ref_uniformity(x: np.ndarray, t: float) -> float:
    z, vals = normalise(x), []
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            vals.append(np.exp(-t * np.sum((z[i] - z[j]) ** 2)))
    return float(np.log(np.mean(vals)))


def ref_alignment_class(x: np.ndarray, y: np.ndarray) -> float:
    z, vals = normalise(x), []
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            if y[i] == y[j]:
                vals.append(np.sum((z[i] - z[j]) ** 2))
    return float(np.mean(vals))


def make_features(x: np.ndarray, y: np.ndarray, num_classes: int = 4) -> Features:
    """All rows in train, val and test thirds (the probe pools the three splits in that order)."""
    x, y = x.astype(np.float32), y.astype(np.int64)
    cut = np.array_split(np.arange(len(x)), 3)
    return Features({s: x[c] for s, c in zip(("train", "val", "test"), cut)},
                    {s: y[c] for s, c in zip(("train", "val", "test"), cut)}, num_classes)


def probe(x: np.ndarray, y: np.ndarray, **params):
    return PROBES.get("diagnostics")(make_features(x, y), params={**PARAMS, **params}, seed=None,
                                     device=torch.device("cpu"))


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """120 ReLU'd 24-d features around 4 class centres: positive like pooled CNN features."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 120)
    x = np.maximum(rng.normal(size=(4, 24))[y] + 0.7 * rng.normal(size=(120, 24)), 0) + 0.01
    return x.astype(np.float32), y


def test_metrics__match_independent_references(clustered):
    x, y = clustered
    m = probe(x, y).metrics
    assert m["collapse_std"] == pytest.approx(ref_collapse_std(x), rel=1e-9)
    assert m["effective_rank"] == pytest.approx(ref_effective_rank(x), rel=1e-9)
    assert m["effective_rank_ratio"] == pytest.approx(ref_effective_rank(x) / 24, rel=1e-9)
    assert m["uniformity"] == pytest.approx(ref_uniformity(x, t=2.0), abs=1e-5)  # float32 distances
    assert m["alignment_class"] == pytest.approx(ref_alignment_class(x, y), rel=1e-9)
    assert m["collapsed"] == 0.0
    assert set(m) == {"collapse_std", "effective_rank", "effective_rank_ratio", "uniformity", "alignment_class",
                      "collapsed"}
    assert all(isinstance(v, float) for v in m.values())


def test_uniformity__blocks_and_other_t_match_reference(clustered):
    from evalbench.protocols.diagnostics import uniformity

    x, _ = clustered
    for chunk in (7, 64, 1000):  # blocks smaller than, not dividing, and larger than n
        assert uniformity(torch.from_numpy(x), t=0.5, chunk=chunk) == pytest.approx(ref_uniformity(x, 0.5), abs=1e-5)


def test_identical_features__collapse():
    x = np.tile(np.random.default_rng(1).normal(size=(1, 32)), (90, 1))
    r = probe(x, np.arange(90) % 3)
    m = r.metrics
    assert m["collapse_std"] == pytest.approx(0.0, abs=1e-6)
    assert m["effective_rank"] == 1.0
    assert m["uniformity"] == pytest.approx(0.0, abs=1e-5)
    assert m["alignment_class"] == pytest.approx(0.0, abs=1e-9)
    assert m["collapsed"] == 1.0 and "constant features" in r.details["collapse_reasons"]


def test_all_zero_features__collapse():
    m = probe(np.zeros((30, 8)), np.arange(30) % 2).metrics
    assert m["collapsed"] == 1.0 and m["effective_rank"] == 1.0 and m["collapse_std"] == 0.0


def test_isotropic_gaussian__spread_and_not_collapsed():
    x = np.random.default_rng(2).normal(size=(4000, 16))
    m = probe(x, np.arange(4000) % 4).metrics
    assert m["collapse_std"] == pytest.approx(1.0, abs=0.03)
    assert 15.0 < m["effective_rank"] <= 16.0 and m["effective_rank_ratio"] > 0.93
    assert m["collapsed"] == 0.0


@pytest.mark.parametrize("r", [1, 2, 5])
def test_rank_r_features__effective_rank_at_most_r(r):
    rng = np.random.default_rng(r)
    x = rng.normal(size=(200, r)) @ rng.normal(size=(r, 20)) + rng.normal(size=(1, 20))  # rank r after centring
    m = probe(x, np.arange(200) % 4).metrics
    assert 1.0 <= m["effective_rank"] <= r * (1 + 1e-4)  # the artifact is float32: rounding leaves ~1e-7 singular values
    assert m["effective_rank"] == pytest.approx(ref_effective_rank(x.astype(np.float32)), rel=1e-4)


def test_near_collapse__flagged_by_collapse_std_threshold():
    """A shared direction plus a variation 1e-3 of it: not constant, but collapse_std ~ 1e-3, below the threshold."""
    rng = np.random.default_rng(3)
    x = 1.0 + 1e-3 * rng.normal(size=(300, 64))
    r = probe(x, np.arange(300) % 3)
    assert r.metrics["collapse_std"] < 0.01 and r.metrics["collapsed"] == 1.0
    assert r.details["collapse_reasons"] == [f"collapse_std < {PARAMS['collapse_std_threshold']:g}"]


def test_subsample__deterministic_bounded_and_seeded(clustered):
    x, y = clustered
    a, b = probe(x, y, max_samples=50), probe(x, y, max_samples=50)
    assert a.metrics == b.metrics and a.details == b.details
    assert a.details["n_samples"] == 50 and a.details["n_available"] == 120 and a.details["dim"] == 24
    assert a.details["thresholds"] == {"collapse_std_threshold": PARAMS["collapse_std_threshold"],
                                       "constant_tol": PARAMS["constant_tol"]}
    assert probe(x, y, max_samples=50, subsample_seed=1).metrics != a.metrics
    from evalbench.protocols.diagnostics import subsample

    idx = subsample(120, 50, seed=PARAMS["subsample_seed"]).numpy()  # the same rows, by the reference
    assert a.metrics["collapse_std"] == pytest.approx(ref_collapse_std(x[idx]), rel=1e-9)
    assert a.metrics["alignment_class"] == pytest.approx(ref_alignment_class(x[idx], y[idx]), rel=1e-9)


def test_no_same_label_pair__fails_saying_why():
    from evalbench.core.errors import EvalbenchError

    with pytest.raises(EvalbenchError, match="no two sampled features share a label"):
        probe(np.random.default_rng(4).normal(size=(6, 5)), np.arange(6))


# --- the example suite's baseline row: timm:resnet18, random weights, 32 px -------------------------

@pytest.fixture(scope="module")
def resnet18_random():
    pytest.importorskip("timm")
    from evalbench.encoders import build_encoder

    torch.manual_seed(0)
    return build_encoder("timm:resnet18", in_chans=3).eval()


def _features(encoder, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return encoder(images).numpy()


def test_timm_resnet18_random_32px__sees_only_a_corner_and_collapses_when_it_is_constant(resnet18_random):
    """timm zero-initialises each block's last BN, so every residual branch outputs 0 and the features
    are the shortcut path's: at 32 px that is the stem's receptive field at position (0, 0), the
    top-left 6x6 pixels. Fully random images therefore give features that DO vary (not collapsed),
    while images that differ everywhere but share that corner (a black background, as in digits,
    MNIST and Fashion-MNIST) give identical features: collapsed."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 32, 32, generator=g)
    y = np.arange(64) % 4
    free = probe(_features(resnet18_random, images), y)
    assert free.metrics["collapsed"] == 0.0 and free.metrics["collapse_std"] > 0.1

    images[:, :, :6, :6] = -2.0  # same corner, the remaining 97% of each image still random
    x = _features(resnet18_random, images)
    assert np.ptp(x, axis=0).max() == 0.0  # input-independent
    r = probe(x, y)
    assert r.metrics["collapsed"] == 1.0 and "constant features" in r.details["collapse_reasons"]
    assert r.metrics["effective_rank"] == 1.0 and r.metrics["collapse_std"] == pytest.approx(0.0, abs=1e-6)

    images[:, :, 6, 6] += 5.0  # and the pixel just outside the corner changes nothing
    assert np.array_equal(_features(resnet18_random, images), x)
