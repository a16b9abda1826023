"""Every layout (evalbench.checkpoints.layouts): a checkpoint built the way that project saves it, from a
small timm / torchvision model, loads with one suite entry (at most `select:`) and gives the original
in-memory model's features and k-NN / linear numbers; heads, predictors, queues and the other
candidate are dropped and reported; the record names the layout and the candidate."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from evalbench.checkpoints import LAYOUTS
from evalbench.core.errors import CheckpointError
from tests.checkpoints.helpers import TIMM, assert_same_numbers, load_encoder, scramble, source, spec_for

pytest.importorskip("timm")

Sd = dict[str, torch.Tensor]


def pre(prefix: str, sd: Sd) -> Sd:
    return {prefix + k: v for k, v in sd.items()}


def seq(enc) -> Sd:
    """State dict of ``nn.Sequential(*list(model.children())[:-1])``, the lightly / PyTorch-BYOL backbone."""
    return nn.Sequential(*list(enc.model.children())[:-1]).state_dict()


def head(*names: str, dim: int = 96) -> Sd:
    g = torch.Generator().manual_seed(5)
    return {n: torch.randn(8, dim, generator=g) for n in names}


OPTIMIZER = {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
LIGHTNING = {"epoch": 9, "global_step": 90, "pytorch-lightning_version": "2.1.0", "optimizer_states": [OPTIMIZER],
             "lr_schedulers": [], "callbacks": {}, "hyper_parameters": {"lr": 0.1}}

# layout -> (file name, build(online, other) -> object saved; `other` is the momentum / target / student copy)
BUILDS: dict[str, tuple[str, Callable]] = {
    "plain": ("timm.pth", lambda a, b: {**a.model.state_dict(), **head("fc.weight")}),
    "nested": ("timm-train.pth.tar", lambda a, b: {
        "epoch": 3, "arch": "test_resnet", "args": argparse.Namespace(lr=0.1), "optimizer": OPTIMIZER,
        "state_dict": {**a.model.state_dict(), **head("fc.weight")}, "state_dict_ema": b.model.state_dict()}),
    "dino": ("dino.pth", lambda a, b: {
        "teacher": {**pre("backbone.", a.model.state_dict()), **head("head.mlp.0.weight", "head.last_layer.weight")},
        "student": {**pre("module.backbone.", b.model.state_dict()), **head("module.head.mlp.0.weight")},
        "optimizer": OPTIMIZER, "epoch": 100, "args": argparse.Namespace(arch="test_resnet"),
        "dino_loss": {"center": torch.zeros(1, 8)}}),
    "moco": ("moco_v2.pth.tar", lambda a, b: {"epoch": 200, "arch": "resnet", "optimizer": OPTIMIZER, "state_dict": {
        **pre("module.encoder_q.", a.model.state_dict()), **head("module.encoder_q.fc.0.weight", "module.encoder_q.fc.2.weight"),
        **pre("module.encoder_k.", b.model.state_dict()), **head("module.encoder_k.fc.0.weight"),
        "module.queue": torch.randn(8, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}}),
    "byol": ("byol.pth", lambda a, b: {  # sthalles/PyTorch-BYOL: Sequential(children[:-1]) + its `projetion` head
        "online_network_state_dict": {**pre("encoder.", seq(a)), **head("projetion.net.0.weight")},
        "target_network_state_dict": {**pre("encoder.", seq(b)), **head("projetion.net.0.weight")},
        "optimizer_state_dict": OPTIMIZER}),
    "vissl": ("vissl.torch", lambda a, b: {"type": "checkpoint", "classy_state_dict": {"base_model": {"model": {
        "trunk": pre("_feature_blocks.", a.model.state_dict()), "heads": head("0.clf.0.weight")}}}}),
    "lightning": ("model.ckpt", lambda a, b: {**LIGHTNING, "state_dict": {
        **pre("model.", a.model.state_dict()), **head("classifier.weight")}}),
    "solo-learn": ("solo.ckpt", lambda a, b: {**LIGHTNING, "state_dict": {
        **pre("backbone.", a.model.state_dict()), **head("projector.0.weight", "classifier.weight"),
        **pre("momentum_backbone.", b.model.state_dict()), **head("momentum_projector.0.weight")}}),
    "lightly": ("lightly.ckpt", lambda a, b: {**LIGHTNING, "state_dict": {
        **pre("backbone.", seq(a)), **head("projection_head.layers.0.weight", "prediction_head.layers.0.weight"),
        **pre("backbone_momentum.", seq(b)), **head("projection_head_momentum.layers.0.weight")}}),
}
# what each file holds besides the selected encoder, by reason
DROPPED = {
    "plain": {"head": 1}, "nested": {"head": 1, "candidate ema": 90}, "dino": {"head": 2, "candidate student": 91,
                                                                              "loss state": 1},
    "moco": {"head": 2, "candidate key": 91, "negative queue": 2}, "byol": {"head": 1, "candidate target": 91},
    "vissl": {"head": 1}, "lightning": {"head": 1}, "solo-learn": {"head": 3, "candidate momentum": 90},
    "lightly": {"head": 3, "candidate momentum": 90},
}
# the other candidate, as `select:` names it
OTHER = {"nested": "ema", "dino": "student", "moco": "key", "byol": "target", "solo-learn": "momentum",
         "lightly": "momentum"}


def _save(tmp_path: Path, layout: str) -> tuple[str, object, object]:
    online, other = source(TIMM, seed=1, in_chans=3), source(TIMM, seed=2, in_chans=3)
    file, build = BUILDS[layout]
    torch.save(build(online, other), tmp_path / file)
    return file, online, other


def test_layouts__every_registered_layout_is_tested():
    assert set(BUILDS) == set(LAYOUTS.names())


@pytest.mark.parametrize("layout", sorted(BUILDS))
def test_layout__loads_with_one_entry_and_gives_the_original_numbers(tmp_path, layout):
    file, online, _ = _save(tmp_path, layout)
    spec = spec_for(tmp_path, TIMM, file)
    encoder, report = load_encoder(spec)
    default = LAYOUTS.get(layout).default
    assert (report["layout"], report["selected"], report["selected_by"]) == (layout, default, "default")
    assert report["loaded"] == report["encoder_tensors"] == 90 and report["skipped"] == []
    assert report["dropped"] == DROPPED[layout]
    metrics = assert_same_numbers(encoder, online, spec)
    assert set(metrics) == {"knn/top1_k5_T0.07", "knn/top1_k10_T0.1", "linear/top1"}


@pytest.mark.parametrize("layout", sorted(OTHER))
def test_layout__select_takes_the_other_candidate(tmp_path, layout):
    file, online, other = _save(tmp_path, layout)
    spec = spec_for(tmp_path, TIMM, file, select=OTHER[layout])
    encoder, report = load_encoder(spec)
    assert (report["selected"], report["selected_by"]) == (OTHER[layout], "select")
    assert report["candidates"][OTHER[layout]] >= 90
    assert_same_numbers(encoder, other, spec)


def test_layout__select_of_an_absent_candidate_lists_the_present_ones(tmp_path):
    file, _, _ = _save(tmp_path, "moco")
    with pytest.raises(CheckpointError, match=r"`select: teacher` is not in this moco checkpoint; its candidate "
                                              r"encoders: query \(92 tensors\), key \(91 tensors\)"):
        load_encoder(spec_for(tmp_path, TIMM, file, select="teacher"))


def test_layout__moco_v3_base_and_momentum_encoder_with_predictor(tmp_path):
    q, k = source(TIMM, seed=1, in_chans=3), source(TIMM, seed=2, in_chans=3)
    sd = {**pre("module.base_encoder.", q.model.state_dict()), **head("module.base_encoder.fc.0.weight"),
          **pre("module.momentum_encoder.", k.model.state_dict()), **head("module.predictor.0.weight")}
    torch.save({"epoch": 100, "state_dict": sd}, tmp_path / "mocov3.pth.tar")
    spec = spec_for(tmp_path, TIMM, "mocov3.pth.tar")
    encoder, report = load_encoder(spec)
    assert (report["layout"], report["selected"], report["prefix"]) == ("moco", "query", "state_dict.module.base_encoder.")
    assert report["dropped"] == {"head": 2, "candidate key": 90}
    assert_same_numbers(encoder, q, spec)


@pytest.mark.parametrize("wrapper", ["", "module.", "model.", "moco.", "runner.", "pl."])
def test_layout__moco_query_wins_under_any_outer_wrapper(tmp_path, wrapper):
    """Query and key match the encoder equally well by name: the layout decides, never the order of a set."""
    q, k = source(seed=1), source(seed=2)
    torch.save({**pre(wrapper + "encoder_k.", k.model.state_dict()), **pre(wrapper + "encoder_q.", q.model.state_dict()),
                wrapper + "queue": torch.zeros(4, 4)}, tmp_path / "m.pt")
    spec = spec_for(tmp_path, "builtin:small-cnn", "m.pt")
    encoder, report = load_encoder(spec)
    assert (report["selected"], report["prefix"]) == ("query", wrapper + "encoder_q.")
    got = encoder.model.state_dict()
    assert all(torch.equal(got[n], v) for n, v in q.model.state_dict().items())


def test_layout__safetensors_with_a_timm_classifier(tmp_path):
    timm = pytest.importorskip("timm")
    src = scramble(timm.create_model("test_resnet", num_classes=10), 1)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    spec = spec_for(tmp_path, TIMM, "w.safetensors")
    encoder, report = load_encoder(spec)
    assert (report["format"], report["layout"], report["dropped"]) == ("safetensors", "plain", {"head": 2})
    reference, _ = load_encoder(spec)  # the classifier-free reference: the source without its fc
    src.reset_classifier(0)
    reference.model.load_state_dict(src.state_dict())
    assert_same_numbers(encoder, reference, spec)


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "timm:resnet18"])
def test_layout__torchvision_resnet18_with_fc(tmp_path, arch):
    """torchvision's names; timm's ResNets use the same ones, so the file loads into timm:resnet18 as is."""
    torchvision = pytest.importorskip("torchvision")
    full = scramble(torchvision.models.resnet18(weights=None), 3)
    torch.save(full.state_dict(), tmp_path / "resnet18.pth")
    spec = spec_for(tmp_path, arch, "resnet18.pth", preprocessing={"input_size": 32})
    encoder, report = load_encoder(spec)
    assert (report["layout"], report["loaded"], report["dropped"]) == ("plain", 120, {"head": 2})
    assert report["dropped_sample"] == ["fc.bias", "fc.weight"]
    reference = source(arch, seed=0, in_chans=3)  # the original without its classifier, loaded in memory
    reference.model.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    assert_same_numbers(encoder, reference, spec)


def test_layout__byol_pytorch_learner_state_dict(tmp_path):
    """lucidrains/byol-pytorch: online_encoder.net (the whole model, its fc included), a projector and an
    `online_predictor` beside it; the target copy under target_encoder."""
    timm = pytest.importorskip("timm")
    online = scramble(timm.create_model("test_resnet", num_classes=10), 1)
    target = scramble(timm.create_model("test_resnet", num_classes=10), 2)
    sd = {**pre("online_encoder.net.", online.state_dict()), **head("online_encoder.projector.net.0.weight"),
          **pre("target_encoder.net.", target.state_dict()), **head("online_predictor.net.0.weight")}
    torch.save(sd, tmp_path / "learner.pt")
    spec = spec_for(tmp_path, TIMM, "learner.pt")
    encoder, report = load_encoder(spec)
    assert (report["layout"], report["selected"], report["prefix"]) == ("byol", "online", "online_encoder.net.")
    assert report["dropped"] == {"head": 4, "candidate target": 92}  # fc.weight, fc.bias, projector, predictor
    reference = source(TIMM, seed=0, in_chans=3)
    online.reset_classifier(0)
    reference.model.load_state_dict(online.state_dict())
    assert_same_numbers(encoder, reference, spec)
