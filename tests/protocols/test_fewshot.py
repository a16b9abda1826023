"""fewshot@1: the closed-form ridge equals scikit-learn's RidgeClassifier for every L2 of a grid (one
eigendecomposition), the interval over episodes narrows as episodes grow, and a K larger than the
smallest class (or too many ways) is refused before any episode is drawn, and already when a suite or
sweep is read (per-class counts from the task's labels, before any work)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier

import yaml

from evalbench.cli import main
from evalbench.core.errors import ConfigError
from evalbench.features.artifact import Features
from evalbench.protocols.base import TaskSizes
from evalbench.protocols.fewshot import FewshotParams, centroid_predict, fewshot_probe, ridge_scores
from evalbench.pretrain.sweep import parse_sweep
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.suite import parse_suite
from evalbench.specs.task import load_task, resolve_task, task_sizes

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


def _smallest(split: str) -> tuple[int, int]:
    """(class, images) of the smallest class of digits' ``split`` after its split file, from the labels."""
    task = resolve_task("digits")
    counts = np.bincount(getattr(load_task(task), split).labels, minlength=task.num_classes)
    return int(counts.argmin()), int(counts.min())


def _suite(**params) -> dict:
    return {"checkpoints": [{"name": "r", "arch": "builtin:small-cnn", "init": "random"}], "tasks": ["digits"],
            "protocols": ["knn", {"name": "fewshot", "params": params}]}


def test_fewshot__k_above_the_smallest_class_is_refused_when_the_suite_is_read(tmp_path):
    c, n = _smallest("train")
    with pytest.raises(ConfigError, match=rf"s\.yaml: protocols\[1\]\.params\.shots: K = {n + 1} \(the largest of "
                       rf"`shots`\), but class {c} of task 'digits' has only {n} train images .* at most {n}"):
        parse_suite(_suite(shots=[1, n + 1]), source=tmp_path / "s.yaml")
    assert 5 * (n + 1) <= task_sizes(resolve_task("digits")).bank  # the bank check (ways x K) alone lets it through
    parse_suite(_suite(shots=[1, n]), source=tmp_path / "s.yaml")  # the smallest class's size itself is fine
    vc, vn = _smallest("val")
    with pytest.raises(ConfigError, match=rf"params\.queries: {vn + 1} queries per class, but class {vc} of task "
                                          rf"'digits' has only {vn} val images"):
        parse_suite(_suite(queries=vn + 1), source=tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match=r"params\.ways: got 11; task 'digits' has 10 classes"):
        parse_suite(_suite(ways=11), source=tmp_path / "s.yaml")


def test_fewshot__k_above_the_smallest_class_stops_a_run_and_a_sweep_before_any_work(tmp_path, capsys):
    c, n = _smallest("train")
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(_suite(shots=[n + 1])))
    assert main(["run", str(suite), "--results", str(tmp_path / "res"), "--executor", "local"]) == 2
    assert f"class {c} of task 'digits' has only {n} train images" in capsys.readouterr().err
    assert not list((tmp_path / "res").glob("records/*.json"))  # nothing ran
    base = {"method": "simclr", "arch": "builtin:small-cnn", "task": "digits", "epochs": 1, "batch_size": 64,
            "preprocessing": {"in_chans": 1, "mean": [0.5], "std": [0.5]}}
    with pytest.raises(ConfigError, match=rf"g\.yaml: evaluate\.protocols\[0\]\.params\.shots: K = {n + 1}"):
        parse_sweep({"base": base, "grid": {"loss.temperature": [0.1, 0.2]},
                     "evaluate": {"tasks": ["digits"], "protocols": [{"name": "fewshot", "params": {"shots": [n + 1]}}]}},
                    source=tmp_path / "g.yaml")
