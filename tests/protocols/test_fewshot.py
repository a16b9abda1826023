"""fewshot@1: the closed-form ridge equals scikit-learn's RidgeClassifier for every L2 of a grid (one
eigendecomposition), the interval over episodes narrows as episodes grow, and a K larger than the
smallest class (or too many ways) is refused before any episode is drawn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier

from evalbench.core.errors import ConfigError
from evalbench.features.artifact import Features
from evalbench.protocols.base import TaskSizes
from evalbench.protocols.fewshot import FewshotParams, centroid_predict, fewshot_probe, ridge_scores
from evalbench.specs.protocol import resolve_protocol

CPU = torch.device("cpu")
L2S = [1e-3, 1e-1, 1.0, 10.0, 300.0]


@pytest.mark.parametrize("n,dim,classes", [(25, 12, 5), (40, 64, 5), (30, 8, 3)])  # n < D and n > D
def test_ridge__equals_sklearn_ridge_classifier_for_every_l2(n, dim, classes):
    rng = np.random.default_rng(n)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, dim)) + 0.7 * rng.normal(size=(classes, dim))[y]
    q = rng.normal(size=(50, dim))
    scores = ridge_scores(torch.tensor(x)[None], torch.tensor(y)[None], torch.tensor(q)[None], L2S, classes)
    for i, l2 in enumerate(L2S):
        ref = RidgeClassifier(alpha=l2, fit_intercept=True, solver="svd").fit(x, y)
        np.testing.assert_allclose(scores[i, 0].numpy(), ref.decision_function(q), rtol=1e-7, atol=1e-9)
        assert np.array_equal(scores[i, 0].argmax(-1).numpy(), ref.predict(q))


def test_centroid__nearest_class_mean():
    sx = torch.tensor([[[[0.0, 0.0], [0.0, 2.0]], [[4.0, 0.0], [4.0, 2.0]]]])  # (1 episode, 2 ways, 2 shots, 2)
    qx = torch.tensor([[[0.5, 1.0], [3.0, 1.0], [1.9, 9.0]]])
    assert centroid_predict(sx, qx).tolist() == [[0, 1, 0]]


def _features(per_class=(60, 20, 40), classes=6, dim=16, seed=0) -> Features:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    x, y = {}, {}
    for s, n in zip(("train", "val", "test"), per_class):
        y[s] = np.repeat(np.arange(classes), n).astype(np.int64)
        x[s] = (centers[y[s]] + 1.2 * rng.normal(size=(len(y[s]), dim))).astype(np.float32)
    return Features(x, y, classes)


PARAMS = {**resolve_protocol("fewshot").params, "shots": [1, 5], "episodes": 40, "val_episodes": 20, "knn_draws": 3}


def test_fewshot__metrics_intervals_and_l2_chosen_on_val():
    r = fewshot_probe(_features(), params=PARAMS, seed=0, device=CPU)
    assert set(r.metrics) == {f"top1_{c}_{k}shot" for c in ("centroid", "ridge", "knn") for k in (1, 5)}
    for m, v in r.metrics.items():
        lo, hi = r.intervals[m]
        assert 0 <= lo < v < hi <= 1.0 + 1e-9
    assert r.metrics["top1_centroid_5shot"] > r.metrics["top1_centroid_1shot"] > 0.3  # chance (5-way) is 0.2
    assert set(r.details["l2"]) == {"1", "5"} and all(v in PARAMS["l2_grid"] for v in r.details["l2"].values())
    again = fewshot_probe(_features(), params=PARAMS, seed=0, device=CPU)
    assert again.metrics == r.metrics  # the seed fixes the episodes
    assert fewshot_probe(_features(), params=PARAMS, seed=1, device=CPU).metrics != r.metrics


def test_fewshot__interval_narrows_as_episodes_grow():
    width = {}
    for episodes in (25, 400):
        r = fewshot_probe(_features(), params={**PARAMS, "shots": [1], "episodes": episodes}, seed=0, device=CPU)
        lo, hi = r.intervals["top1_centroid_1shot"]
        width[episodes] = hi - lo
    assert width[400] < width[25] / 2.5  # ~ 1 / sqrt(episodes): a factor 4 expected


def test_fewshot__k_above_the_smallest_class_is_refused_before_any_episode():
    feats = _features()
    feats.y["train"][:55] = 1  # class 0 keeps 5 train images
    with pytest.raises(ConfigError, match=r"class 0 has only 5 train images"):
        fewshot_probe(feats, params={**PARAMS, "shots": [1, 20]}, seed=0, device=CPU)
    with pytest.raises(ConfigError, match="7 ways but the task has 6 classes"):
        fewshot_probe(_features(), params={**PARAMS, "ways": 7}, seed=0, device=CPU)
    with pytest.raises(ConfigError, match=r"`queries` is 30 but class 0 has only 20 val images"):
        fewshot_probe(_features(), params={**PARAMS, "queries": 30}, seed=0, device=CPU)


def test_fewshot__params_are_checked_at_the_edge():
    with pytest.raises(ConfigError):
        resolve_protocol("fewshot").with_params({"shots": [5, 5]}, where="suite.yaml")
    with pytest.raises(ConfigError):
        resolve_protocol("fewshot").with_params({"episodes": 1}, where="suite.yaml")
    p = FewshotParams.model_validate({**PARAMS, "shots": [1, 200]})
    assert p.check_sizes(TaskSizes("tiny", bank=500, test=None))[0][0] == ("shots",)
