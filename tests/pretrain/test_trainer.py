"""The pretraining loop: every method trains and its loss falls, SSL methods never read labels, a
diverging loss fails with the epoch and last finite loss, and a killed run resumes from its last
saved epoch to the same weights as an uninterrupted run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evalbench.data.base import ArraySource
from evalbench.pretrain.config import parse_pretrain_config
from evalbench.pretrain.methods import METHODS, READS_LABELS
from evalbench.pretrain.trainer import PretrainDiverged, pretrain

CPU = torch.device("cpu")
PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5]}


def source(n: int = 96, seed: int = 0, labels: np.ndarray | None = None) -> ArraySource:
    """Tiny 8x8 images of 4 kinds of stroke, so views of one image resemble each other."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n) if labels is None else labels
    x = np.zeros((n, 1, 8, 8), np.uint8)
    for i, c in enumerate(y):
        x[i, 0, :, 2 * c : 2 * c + 2] = 200
    x = np.clip(x + rng.integers(0, 40, x.shape), 0, 255).astype(np.uint8)
    return ArraySource(x, y.astype(np.int64))


def config(method: str, **over):
    raw = {"method": method, "arch": "builtin:small-cnn", "preprocessing": PREP, "task": "digits", "seed": 0,
           "epochs": 3, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
           "augment": {"crop": {"enabled": True, "scale": [0.6, 1.0]}, "flip": {"enabled": True, "p": 0.5}}}
    if method != "supervised":
        raw["head"] = {"kind": "mlp", "hidden_dim": 32, "out_dim": 16, "depth": 2}
    if method == "moco":
        raw["queue"] = {"size": 64}
    raw.update(over)
    return parse_pretrain_config(raw, where="test")


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.encoder.model.state_dict().items()}


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_trainer__every_method_trains_and_its_loss_falls(method):
    r = pretrain(config(method, epochs=5), source(128), num_classes=4, state_dir=None, device=CPU)
    assert len(r.loss_curve) == 5 and all(np.isfinite(r.loss_curve))
    # MoCo's loss first rises while its queue of random vectors fills with real (harder) keys
    first = max(r.loss_curve[:2]) if method == "moco" else r.loss_curve[0]
    assert r.loss_curve[-1] < first, r.loss_curve


@pytest.mark.parametrize("method", sorted(set(METHODS.names()) - READS_LABELS))
def test_trainer__ssl_methods_never_read_labels(method):
    base = source(64)
    shuffled = ArraySource(base.images, np.random.default_rng(5).permutation(base.labels))
    a = pretrain(config(method, epochs=1), base, num_classes=4, state_dir=None, device=CPU)
    b = pretrain(config(method, epochs=1), shuffled, num_classes=4, state_dir=None, device=CPU)
    for k, v in weights(a).items():
        torch.testing.assert_close(v, weights(b)[k], rtol=0, atol=0)


def test_trainer__supervised_does_read_labels():
    base = source(64)
    a = pretrain(config("supervised", epochs=1), base, num_classes=4, state_dir=None, device=CPU)
    other = ArraySource(base.images, np.random.default_rng(5).permutation(base.labels))
    b = pretrain(config("supervised", epochs=1), other, num_classes=4, state_dir=None, device=CPU)
    assert any(not torch.equal(v, weights(b)[k]) for k, v in weights(a).items())


def test_trainer__diverging_loss_names_the_epoch_and_last_finite_loss():
    cfg = config("simclr", epochs=3, optimizer={"name": "sgd", "lr": 1e30, "weight_decay": 0.0, "momentum": 0.0})
    with pytest.raises(PretrainDiverged, match=r"epoch \d.*last finite epoch loss"):
        pretrain(cfg, source(96), num_classes=4, state_dir=None, device=CPU)


@pytest.mark.parametrize("method", ["moco", "byol", "simclr"])
def test_trainer__resume_from_saved_epoch_ends_with_identical_weights(tmp_path, method):
    cfg = config(method, epochs=3, checkpoint_every=1)
    full = pretrain(cfg, source(64), num_classes=4, state_dir=tmp_path / "full", device=CPU)
    killed = pretrain(cfg, source(64), num_classes=4, state_dir=tmp_path / "run", device=CPU, stop_after=2)
    assert killed.loss_curve == full.loss_curve[:2]  # as if killed during epoch 3, after epoch 2 was saved
    resumed = pretrain(cfg, source(64), num_classes=4, state_dir=tmp_path / "run", device=CPU)
    assert resumed.resumed_from == 2 and resumed.loss_curve == full.loss_curve
    for k, v in weights(full).items():
        torch.testing.assert_close(weights(resumed)[k], v, rtol=0, atol=0)
