"""The 95% interval on every probe number (protocols/bootstrap.py) and the per-example predictions
stored beside the record (results/predictions.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evalbench.features.artifact import Features
from evalbench.protocols.base import ProbeResult
from evalbench.protocols.bootstrap import (Predictions, bootstrap_intervals, bootstrap_means, mean_interval,
                                           paired_bootstrap)
from evalbench.protocols.knn import knn_probe
from evalbench.protocols.linear import linear_probe
from evalbench.results.predictions import interval_details, load_predictions, predictions_path


def test_bootstrap__covers_the_true_accuracy_at_about_the_nominal_rate():
    # simulated test sets: each of n examples is right with probability p (the true accuracy)
    rng = np.random.default_rng(1)
    p, n, trials = 0.8, 200, 300
    hits = 0
    for t in range(trials):
        y = rng.integers(0, 5, n)
        pred = np.where(rng.random(n) < p, y, (y + 1) % 5)
        lo, hi = bootstrap_intervals(Predictions(y, {"top1": pred}), resamples=500, seed=t)["top1"]
        hits += lo <= p <= hi
    # 95% nominal; the binomial spread of the rate over 300 trials is ~1.3 points
    assert 0.91 <= hits / trials <= 0.985


def test_bootstrap__bounds_hold_the_point_value_and_are_deterministic():
    y = np.arange(100) % 4
    pred = np.where(np.arange(100) < 70, y, 0)
    preds = Predictions(y, {"a": pred, "b": y})
    ci = bootstrap_intervals(preds)
    acc = float((pred == y).mean())
    assert ci["a"][0] < acc < ci["a"][1] and ci["a"][1] - ci["a"][0] < 0.25
    assert ci["b"] == [1.0, 1.0]  # every example right: every resample is 100%
    assert bootstrap_intervals(preds) == ci  # fixed seed: the same bounds on a rerun


def test_bootstrap__blocks_give_the_same_draws_count():
    scores = np.random.default_rng(0).random((2, 3000))
    assert bootstrap_means(scores, resamples=1001).shape == (2, 1001)


def test_paired_bootstrap__pairs_the_same_examples():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.8
    b = a.copy()
    b[:40] = False  # b is a with 40 more errors (some where a was already wrong)
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["lower"] == same["upper"] == 0
    d = paired_bootstrap(a, b)
    assert d["lower"] > 0 and d["p_not_better"] < 0.01  # pairing sees the difference at once
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(a, b[:10])


def test_mean_interval__t_interval_over_draws():
    mean, (lo, hi) = mean_interval(np.array([0.5, 0.7]))
    assert mean == pytest.approx(0.6) and lo < 0.5 and hi > 0.7  # t with 1 dof is wide
    with pytest.raises(ValueError):
        mean_interval(np.array([0.5]))


def _features() -> Features:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 2
    x, y = {}, {}
    for s, n in (("train", 90), ("val", 30), ("test", 60)):
        y[s] = rng.integers(0, 3, n).astype(np.int64)
        x[s] = (centers[y[s]] + rng.normal(size=(n, 8))).astype(np.float32)
    return Features(x, y, 3)


@pytest.mark.parametrize("probe,params", [
    (knn_probe, {"settings": [{"k": 5, "T": 0.07}, {"k": 20, "T": 0.1}], "chunk_size": 64}),
    (linear_probe, {"l2_grid": [1e-3, 1e-1], "max_iter": 50}),
])
def test_probes__return_test_predictions_that_give_their_metrics(probe, params, tmp_path):
    feats = _features()
    result = probe(feats, params=params, seed=None, device=torch.device("cpu"))
    pred = result.predictions
    assert pred is not None and list(pred.y_true) == list(feats.y["test"])
    assert set(pred.y_pred) == set(result.metrics)
    for m, v in result.metrics.items():
        assert float((pred.y_pred[m] == pred.y_true).mean()) == pytest.approx(v)
    out = interval_details(result, storage=tmp_path, key="k1")
    for m, v in result.metrics.items():
        lo, hi = out["ci95"][m]
        assert lo <= v <= hi
    assert out["predictions"]["file"] == "artifacts/predictions/k1.npz" and out["predictions"]["n"] == 60
    back = load_predictions(predictions_path(tmp_path, "k1"))
    assert np.array_equal(back.y_true, pred.y_true)
    assert all(np.array_equal(back.y_pred[m], pred.y_pred[m]) for m in pred.y_pred)


def test_interval_details__a_probes_own_interval_wins_and_no_predictions_no_file(tmp_path):
    result = ProbeResult({"top1_x": 0.5, "rank": 3.0}, intervals={"top1_x": [0.4, 0.6]})
    out = interval_details(result, storage=tmp_path, key="k2")
    assert out == {"ci95": {"top1_x": [0.4, 0.6]}}
    assert load_predictions(predictions_path(tmp_path, "k2")) is None
    assert interval_details(ProbeResult({"rank": 3.0}), storage=tmp_path, key="k3") == {}
