"""rotation@1 and invariance@1: an encoder made rotation-invariant by construction (its features averaged
over the four rotations of its input) scores ~25% on the rotation probe and invariance ~1, through the
real views and extraction; a plain CNN predicts rotations far above chance; the panel scores 1 where the
encoder ignores the transform."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evalbench.core.errors import ConfigError
from evalbench.data.base import ArraySource
from evalbench.data.views import VIEWS
from evalbench.encoders import build_encoder
from evalbench.encoders.base import DataConfig, Encoder
from evalbench.features.artifact import Features
from evalbench.features.extract import extract_features
from evalbench.protocols.invariance import invariance_probe, rotation_probe
from evalbench.specs.protocol import resolve_protocol

CPU = torch.device("cpu")
CFG = DataConfig(in_chans=1, input_size=None, mean=(0.5,), std=(0.5,))
SPLITS = {"train": 120, "val": 40, "test": 60}


def _images(seed: int = 0) -> dict[str, ArraySource]:
    """Asymmetric 12x12 shapes (a bar and a corner blob) so each rotation looks different."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, n in SPLITS.items():
        img = (rng.random((n, 1, 12, 12)) * 60).astype(np.uint8)
        img[:, :, 1:3, 2:10] = 255  # a bar near the top
        img[:, :, 7:10, 1:4] += rng.integers(100, 190, (n, 1, 1, 1)).astype(np.uint8)  # a blob lower left
        out[s] = ArraySource(img, rng.integers(0, 3, n))
    return out


def _rotation_averaged(encoder: Encoder) -> Encoder:
    base = encoder._features_fn
    fn = lambda model, x: torch.stack([base(model, torch.rot90(x, k, dims=(2, 3))) for k in range(4)]).mean(0)
    return Encoder(encoder.arch, encoder.model, fn, encoder.num_features)


def _features(encoder: Encoder, view: str) -> Features:
    v = VIEWS.get(view)
    sources = {s: v.apply(src) for s, src in _images().items() if s in v.splits}  # as extract_task_features
    x = {s: extract_features(encoder, src, cfg=CFG, device=CPU) for s, src in sources.items()}
    return Features(x, {s: src.labels for s, src in sources.items()}, v.num_classes or 3, {"view": view})


@pytest.fixture(scope="module")
def cnn() -> Encoder:
    torch.manual_seed(0)
    return build_encoder("builtin:small-cnn", in_chans=1)


ROT = {**resolve_protocol("rotation").params, "l2_grid": [1e-3, 1e-1], "max_iter": 50}


def test_rotation__an_encoder_invariant_by_construction_scores_chance_and_invariance_one(cnn):
    r = rotation_probe(_features(_rotation_averaged(cnn), "rotation"), params=ROT, seed=None, device=CPU)
    assert abs(r.metrics["top1"] - 0.25) < 0.08  # chance: the four rotations have the same features
    assert r.metrics["invariance"] == pytest.approx(1.0, abs=1e-5)
    assert r.details["chance"] == 0.25 and r.intervals["invariance"][0] == pytest.approx(1.0, abs=1e-5)


def test_rotation__a_plain_cnn_predicts_rotations_and_is_not_invariant(cnn):
    r = rotation_probe(_features(cnn, "rotation"), params=ROT, seed=None, device=CPU)
    assert r.metrics["top1"] > 0.6
    assert r.metrics["invariance"] < 0.999 and r.predictions is not None and len(r.predictions.y_true) == 4 * 60
    assert r.details["invariance_rescaled"]["invariance"] < 0.99


def test_invariance_panel__one_for_transforms_the_encoder_ignores(cnn):
    flip_avg = Encoder(cnn.arch, cnn.model, lambda m, x: (cnn._features_fn(m, x) + cnn._features_fn(m, x.flip(-1))) / 2,
                       cnn.num_features)
    r = invariance_probe(_features(flip_avg, "invariance_panel"), params={"baseline_seed": 0}, seed=None, device=CPU)
    assert set(r.metrics) == {"invariance_hflip", "invariance_crop", "invariance_color", "invariance_blur"}
    assert r.metrics["invariance_hflip"] == pytest.approx(1.0, abs=1e-5)
    assert all(r.metrics[m] < 0.9999 for m in r.metrics if m != "invariance_hflip")
    assert all(lo <= r.metrics[m] <= hi for m, (lo, hi) in r.intervals.items())


def test_invariance__features_without_copies_are_refused(cnn):
    feats = Features({s: np.zeros((4, 3), np.float32) for s in SPLITS}, {s: np.zeros(4, np.int64) for s in SPLITS}, 2,
                     {"view": "identity"})
    with pytest.raises(ConfigError, match="makes no copies"):
        invariance_probe(feats, params={"baseline_seed": 0}, seed=None, device=CPU)


def test_invariance_panel__extracts_the_test_split_only():
    """invariance@1 reads only test: the view's other splits are not extracted (5 copies of each would be)."""
    from evalbench.run.worker import extract_task_features
    from evalbench.specs.checkpoint import parse_checkpoint
    from evalbench.specs.task import load_task, resolve_task

    spec = parse_checkpoint({"name": "r", "arch": "builtin:small-cnn", "init": "random",
                             "preprocessing": {"in_chans": 1, "mean": [0.5], "std": [0.5]}}, where="t", base_dir=Path("."))
    task = resolve_task("digits")
    f = extract_task_features(spec, task, weights_file=None, view="invariance_panel", device=CPU)
    assert set(f.x) == {"test"} and f.meta["sizes"] == {"test": 5 * len(load_task(task).test)}
    assert set(extract_task_features(spec, task, weights_file=None, view="rotation", device=CPU).x) == {"train", "val", "test"}
