"""Shared helpers of the checkpoint tests: seeded source models, suite entries as a user writes them,
features through the runner's extraction path, and k-NN / linear numbers on a tiny fixed task."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from evalbench.data.base import ArraySource
from evalbench.encoders import Encoder, build_encoder, preprocess
from evalbench.features.artifact import Features
from evalbench.features.extract import extract_features
from evalbench.protocols import PROBES
from evalbench.run import worker
from evalbench.specs.checkpoint import CheckpointSpec, parse_checkpoint

CPU = torch.device("cpu")
SMALL = "builtin:small-cnn"
TIMM = "timm:test_resnet"  # timm's 0.37M-parameter test ResNet: every layout below is built from it
KNN = {"settings": [{"k": 5, "T": 0.07}, {"k": 10, "T": 0.1}], "chunk_size": 4096}
LINEAR = {"l2_grid": [1e-3, 1e-1], "max_iter": 50, "tol": 1e-6}


def scramble(model: nn.Module, seed: int) -> nn.Module:
    """Give every float parameter and buffer (BN running stats included) seeded random values, so
    a load that skipped or mixed up any tensor changes the features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            v = torch.randn(t.shape, generator=g) * 0.2
            if name.endswith("running_var"):
                v = v.abs() + 0.5
            elif name.endswith("weight") and t.ndim == 1:  # norm-layer scale
                v = v + 1.0
            t.copy_(v)
    return model.eval()


def images(chans: int, size: int, n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, chans, size, size), dtype=np.uint8)


def source(arch: str = SMALL, seed: int = 1, in_chans: int = 1) -> Encoder:
    """An encoder with seeded random weights; its checkpoint is ``.model.state_dict()``."""
    return scramble(build_encoder(arch, in_chans=in_chans), seed)


def spec_for(tmp_path: Path, arch: str, file: str | None, **extra) -> CheckpointSpec:
    """A suite entry as a user writes it (path relative to the suite directory)."""
    d = {"name": "ck", "arch": arch, **extra}
    if file is not None:
        d["path"] = file
    return parse_checkpoint(d, where="suite.yaml: checkpoints[0]", base_dir=tmp_path)


def load_encoder(spec: CheckpointSpec) -> tuple[Encoder, dict]:
    """What the extract stage does: the suite's file (or seeded random init) into the encoder."""
    return worker.load_encoder(spec, spec.path)


def feats(model: nn.Module, spec: CheckpointSpec, imgs: np.ndarray) -> np.ndarray:
    """Features of uint8 images preprocessed as ``spec.data`` says. An Encoder goes through the
    extraction path the runner uses; a reference network (a timm / torchvision model whose
    forward gives the pooled features) gets the same preprocessed batch directly."""
    if isinstance(model, Encoder):
        src = ArraySource(imgs, np.zeros(len(imgs), dtype=np.int64))
        return extract_features(model, src, cfg=spec.data, device=CPU, batch_size=len(imgs))
    with torch.no_grad():
        return model.eval()(preprocess(torch.from_numpy(imgs), spec.data)).numpy()


def tiny_task(chans: int = 3, size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """3 classes whose images differ in brightness (so the probes have signal): train 24, val 12, test 12."""
    rng = np.random.default_rng(7)
    out = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        y = np.arange(n) % 3
        x = rng.integers(0, 120, (n, chans, size, size)) + 60 * y[:, None, None, None]
        out[split] = (x.astype(np.uint8), y.astype(np.int64))
    return out


def probe_numbers(encoder: Encoder, spec: CheckpointSpec) -> tuple[dict, np.ndarray]:
    """(k-NN and linear metrics, test features) of ``encoder`` on ``tiny_task``."""
    task = tiny_task(spec.data.in_chans)
    x = {s: extract_features(encoder, ArraySource(*task[s]), cfg=spec.data, device=CPU, batch_size=64) for s in task}
    features = Features(x, {s: task[s][1] for s in task}, 3)
    metrics = {}
    for name, params in (("knn", KNN), ("linear", LINEAR)):
        metrics.update({f"{name}/{k}": v for k, v in PROBES.get(name)(features, params=params, seed=0, device=CPU).metrics.items()})
    return metrics, x["test"]


def assert_same_numbers(loaded: Encoder, reference: Encoder, spec: CheckpointSpec) -> dict:
    """The loaded encoder gives the reference's features and the same k-NN and linear numbers, and the
    comparison means something: a fresh encoder of the same arch gives other features."""
    got, got_x = probe_numbers(loaded, spec)
    want, want_x = probe_numbers(reference, spec)
    np.testing.assert_array_equal(got_x, want_x)
    assert got == want
    torch.manual_seed(123)
    fresh = build_encoder(spec.arch, in_chans=spec.data.in_chans)
    imgs = tiny_task(spec.data.in_chans)["test"][0]
    assert not np.allclose(feats(fresh, spec, imgs), want_x, atol=1e-3)
    return got
