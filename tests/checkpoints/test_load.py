"""Checkpoints (evalbench.checkpoints.load, evalbench.specs.checkpoint, evalbench.run.worker.load_encoder): real-world layouts load strictly and give the source model's
features; unusable files, wrong architectures and pickled objects fail with a CheckpointError that
says what is wrong and how to fix it; suite entries are validated; the random-init baseline is
reproducible."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from evalbench.checkpoints.load import LoadReport, best_prefix, load_strict, read_state_dict
from evalbench.core.errors import CheckpointError, ConfigError
from evalbench.core.filehash import sha256_file
from evalbench.data.base import ArraySource
from evalbench.encoders import Encoder, build_encoder, preprocess
from evalbench.features.extract import extract_features
from evalbench.run import worker
from evalbench.run.plan import WEIGHTS_PLANNERS, PlanContext
from evalbench.specs.checkpoint import (CheckpointSpec, FileWeights, RandomWeights, file_weights_identity,
                                        parse_checkpoint)

CPU = torch.device("cpu")
SMALL = "builtin:small-cnn"


# --- helpers ------------------------------------------------------------------------------------


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
        source = ArraySource(imgs, np.zeros(len(imgs), dtype=np.int64))
        return extract_features(model, source, cfg=spec.data, device=CPU, batch_size=len(imgs))
    with torch.no_grad():
        return model.eval()(preprocess(torch.from_numpy(imgs), spec.data)).numpy()


def small_source(seed: int = 1, arch: str = SMALL, in_chans: int = 1) -> Encoder:
    """A builtin encoder with seeded random weights; its checkpoint is ``.model.state_dict()``."""
    return scramble(build_encoder(arch, in_chans=in_chans), seed)


def weights_identity(spec: CheckpointSpec) -> dict:
    """The weights part of the plan's identities (evalbench.run.plan)."""
    payload, upstream = WEIGHTS_PLANNERS[type(spec.weights)](spec, PlanContext())
    assert upstream is None
    return payload


def assert_loads_same_features(tmp_path: Path, arch: str, file: str, source: nn.Module, imgs: np.ndarray, **extra) -> dict:
    spec = spec_for(tmp_path, arch, file, **extra)
    encoder, report = load_encoder(spec)
    want = feats(source, spec, imgs)
    np.testing.assert_allclose(feats(encoder, spec, imgs), want, atol=1e-5, rtol=0)
    # the comparison means something: a fresh encoder of the same arch gives other features
    torch.manual_seed(123)
    fresh = build_encoder(arch, in_chans=spec.data.in_chans)
    assert not np.allclose(feats(fresh, spec, imgs), want, atol=1e-3)
    return report


# --- real-world layouts load strictly and reproduce the source features --------------------------


def test_load__plain_state_dict_matches_source_features(tmp_path):
    src = small_source()
    torch.save(src.model.state_dict(), tmp_path / "plain.pt")
    report = assert_loads_same_features(tmp_path, SMALL, "plain.pt", src, images(1, 8))
    assert report["prefix"] == "" and report["ignored"] == 0 and report["skipped"] == []
    assert report["loaded"] == len(src.model.state_dict())


def test_load__legacy_non_zip_torch_save_matches_source_features(tmp_path):
    src = small_source()
    torch.save(src.model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert_loads_same_features(tmp_path, SMALL, "legacy.pth", src, images(1, 8))


def test_load__safetensors_matches_source_features(tmp_path):
    src = small_source()
    save_file(src.model.state_dict(), str(tmp_path / "w.safetensors"))
    report = assert_loads_same_features(tmp_path, SMALL, "w.safetensors", src, images(1, 8))
    assert report["prefix"] == ""


def test_load__ddp_prefix_matches_source_features(tmp_path):
    src = small_source()
    torch.save({"state_dict": {"module." + k: v for k, v in src.model.state_dict().items()}}, tmp_path / "ddp.pth.tar")
    report = assert_loads_same_features(tmp_path, SMALL, "ddp.pth.tar", src, images(1, 8))
    assert report["prefix"] == "module." and report["ignored"] == 0


def test_load__model_backbone_with_epoch_matches_source_features(tmp_path):
    src = small_source()
    sd = {"backbone." + k: v for k, v in src.model.state_dict().items()}
    sd["head.weight"] = torch.randn(10, 128)  # a projection/classifier head next to the backbone
    torch.save({"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, tmp_path / "ck.pth")
    report = assert_loads_same_features(tmp_path, SMALL, "ck.pth", src, images(1, 8))
    assert report["prefix"] == "backbone."
    assert report["ignored_sample"] == ["head.weight"]


def test_load__moco_loads_encoder_q_not_encoder_k(tmp_path):
    q, k = small_source(seed=1), small_source(seed=2)
    sd = {"module.encoder_q." + n: v for n, v in q.model.state_dict().items()}
    sd.update({"module.encoder_k." + n: v for n, v in k.model.state_dict().items()})
    sd["module.encoder_q.fc.0.weight"] = torch.randn(128, 128)  # MoCo v2 MLP head on the query encoder
    sd["module.queue"] = torch.randn(128, 4096)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 200, "arch": "small-cnn", "state_dict": sd}, tmp_path / "moco.pth.tar")
    imgs = images(1, 8)
    report = assert_loads_same_features(tmp_path, SMALL, "moco.pth.tar", q, imgs)
    assert report["prefix"] == "module.encoder_q."
    assert report["ignored"] == len(k.model.state_dict()) + 3
    spec = spec_for(tmp_path, SMALL, "moco.pth.tar")
    assert not np.allclose(feats(load_encoder(spec)[0], spec, imgs), feats(k, spec, imgs), atol=1e-3)


@pytest.mark.parametrize("q, k", [("encoder_q.", "encoder_k."), ("online_network.", "target_network.")])
def test_best_prefix__query_encoder_chosen_under_any_wrapper(q, k):
    """Online/query and momentum/target keys match the encoder equally well. The online one must
    win every time, not whichever Python's per-process string hashing (set order) puts first: a
    dozen outer wrappers make a hash-order tie-break fail here for any PYTHONHASHSEED."""
    names = ["features.0.weight", "features.1.weight", "features.1.bias", "features.1.running_mean"]
    wrappers = ["", "module.", "model.", "net.", "moco.", "byol.", "ssl.", "runner.", "student.", "m.", "x.", "pl."]
    got = {}
    for w in wrappers:
        keys = [w + p + n for p in (q, k) for n in names] + [w + "queue"]
        got[w] = best_prefix(keys, set(names))
    assert got == {w: w + q for w in wrappers}


def test_load__timm_with_classifier_into_headless_timm(tmp_path):
    timm = pytest.importorskip("timm")
    src = scramble(timm.create_model("resnet10t", pretrained=False, num_classes=10), 1)
    torch.save(src.state_dict(), tmp_path / "sup.pth")
    src.reset_classifier(0)  # reference: the same network's pooled features
    report = assert_loads_same_features(tmp_path, "timm:resnet10t", "sup.pth", src, images(3, 32))
    assert sorted(report["ignored_sample"]) == ["fc.bias", "fc.weight"]
    assert report["prefix"] == "" and report["skipped"] == []


def test_load__torchvision_resnet18_with_fc_into_torchvision(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    src = scramble(torchvision.models.resnet18(weights=None), 1)
    torch.save(src.state_dict(), tmp_path / "resnet18.pth")
    src.fc = nn.Identity()
    report = assert_loads_same_features(tmp_path, "torchvision:resnet18", "resnet18.pth", src, images(3, 32))
    assert sorted(report["ignored_sample"]) == ["fc.bias", "fc.weight"]


def test_load__old_checkpoint_without_num_batches_tracked_loads(tmp_path):
    src = small_source()
    torch.save({k: v for k, v in src.model.state_dict().items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pt")
    report = assert_loads_same_features(tmp_path, SMALL, "old.pt", src, images(1, 8))
    assert report["skipped"] and all(k.endswith("num_batches_tracked") for k in report["skipped"])


# --- unusable files ---------------------------------------------------------------------------------


def _write(path: Path, sd: dict) -> None:
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "epoch": 1}, path)


@pytest.mark.parametrize("name", ["ck.pth", "ck.safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["half", "empty"])
def test_read__truncated_file_is_a_checkpoint_error(tmp_path, name, keep):
    path = tmp_path / name
    _write(path, small_source().model.state_dict())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, name))
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and "re-save" in msg


def test_read__missing_file_names_the_path(tmp_path):
    spec = spec_for(tmp_path, SMALL, "sub/nope.pt")
    with pytest.raises(CheckpointError) as e:
        file_weights_identity(spec, hash_file=sha256_file)
    assert str(tmp_path / "sub" / "nope.pt") in str(e.value) and "path:" in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(spec)


class _Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_read__pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_source().model.state_dict(), "args": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    assert not marker.exists(), "weights-only loading must not run pickled code"
    msg = str(e.value)
    assert str(path) in msg and "pickled objects" in msg and "re-save" in msg
    with pytest.raises(CheckpointError):
        load_encoder(spec_for(tmp_path, SMALL, "evil.pth"))
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_read__whole_pickled_module_is_refused_with_fix(tmp_path):
    torch.save(small_source().model, tmp_path / "module.pt")  # torch.save(model), not model.state_dict()
    with pytest.raises(CheckpointError, match=r"pickles a evalbench.encoders.builtin.SmallCNN object.*re-save the weights "
                                              r"with torch.save\(model.state_dict\(\)"):
        read_state_dict(tmp_path / "module.pt")


def test_read__training_args_namespace_is_allowed(tmp_path):
    """DINO / solo-learn checkpoints carry `args` (argparse.Namespace) beside the weights."""
    import argparse

    src = small_source()
    torch.save({"args": argparse.Namespace(lr=0.1, arch="small"), "student": src.model.state_dict()}, tmp_path / "dino.pth")
    assert set(read_state_dict(tmp_path / "dino.pth")) == set(src.model.state_dict())


def test_read__file_without_tensors_is_a_checkpoint_error(tmp_path):
    torch.save({"epoch": 3, "args": {"lr": 0.1}}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(tmp_path / "meta.pt")


# --- checkpoints of another architecture -------------------------------------------------------


def test_load__wider_cnn_into_small_cnn_lists_shape_mismatch(tmp_path):
    torch.save(small_source(arch="builtin:small-cnn-wide").model.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, "wide.pt"))
    msg = str(e.value)
    assert "does not fit builtin:small-cnn" in msg and "shape mismatch" in msg
    assert "features.0.weight (64, 1, 3, 3) vs (32, 1, 3, 3)" in msg
    assert "check `arch:`" in msg


def test_load__rgb_weights_into_grayscale_encoder_is_a_shape_mismatch(tmp_path):
    torch.save(small_source(in_chans=3).model.state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(CheckpointError, match=r"features.0.weight \(32, 3, 3, 3\) vs \(32, 1, 3, 3\).*in_chans"):
        load_encoder(spec_for(tmp_path, SMALL, "rgb.pt"))


def test_load__resnet18_into_small_cnn_lists_missing_keys(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, "r18.pth"))
    msg = str(e.value)
    assert "missing (" in msg and "features.0.weight" in msg
    assert "unexpected (" in msg and "conv1.weight" in msg
    assert "num_batches_tracked" not in msg.split("missing")[1].split(";")[0]  # never reported as missing


# --- skip_missing -----------------------------------------------------------------------------------


def test_skip_missing__deleted_key_fails_by_default_and_loads_when_allowed(tmp_path):
    src = small_source()
    sd = {"module." + k: v for k, v in src.model.state_dict().items() if k != "features.1.bias"}
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing \(1\): features.1.bias.*skip_missing"):
        load_encoder(spec_for(tmp_path, SMALL, "partial.pt"))
    spec = spec_for(tmp_path, SMALL, "partial.pt", skip_missing=["features.1.b*"])
    encoder, report = load_encoder(spec)
    assert report["skipped"] == ["features.1.bias"]
    # everything else came from the checkpoint
    got = encoder.model.state_dict()
    for k, v in src.model.state_dict().items():
        if k != "features.1.bias":
            assert torch.equal(got[k], v), k


def test_skip_missing__pattern_does_not_excuse_other_missing_keys(tmp_path):
    src = small_source()
    sd = {k: v for k, v in src.model.state_dict().items() if k not in ("features.1.bias", "features.4.weight")}
    with pytest.raises(CheckpointError, match=r"missing \(1\): features.4.weight"):
        load_strict(build_encoder(SMALL, in_chans=1).model, sd, arch=SMALL, skip_missing=("features.1.*",))


def test_load_strict__report_fields():
    src = small_source()
    sd = {"encoder." + k: v for k, v in src.model.state_dict().items()}
    sd["proj.0.weight"] = torch.zeros(3)
    report = load_strict(build_encoder(SMALL, in_chans=1).model, sd, arch=SMALL)
    assert isinstance(report, LoadReport)
    assert (report.prefix, report.ignored, report.skipped) == ("encoder.", ("proj.0.weight",), ())
    assert report.loaded == len(src.model.state_dict())


def test_skip_missing__a_single_string_is_one_pattern_not_characters(tmp_path):
    """`skip_missing: "features.1.bias"` (a YAML string, not a list) must not become the patterns
    'f', 'e', ..., '*': a '*' among them would let every missing key stay at random init."""
    src = small_source()
    torch.save({k: v for k, v in src.model.state_dict().items() if k != "features.0.weight"}, tmp_path / "p.pt")
    try:
        spec = spec_for(tmp_path, SMALL, "p.pt", skip_missing="features.1.*")
    except ConfigError:
        return  # rejecting a non-list is fine too
    assert spec.skip_missing == ("features.1.*",)
    with pytest.raises(CheckpointError, match="features.0.weight"):
        load_encoder(spec)


# --- parse_checkpoint validation ------------------------------------------------------------------


def test_parse__unknown_key_named_with_known_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_checkpoint({"name": "a", "arch": SMALL, "path": "a.pt", "weights": "x"}, where="s.yaml: checkpoints[0]", base_dir=tmp_path)
    msg = str(e.value)
    assert "s.yaml: checkpoints[0]" in msg and "'weights'" in msg and "path" in msg and "skip_missing" in msg


def test_parse__unknown_preprocessing_key(tmp_path):
    with pytest.raises(ConfigError, match=r"preprocessing: unknown key 'size'.*input_size"):
        spec_for(tmp_path, SMALL, "a.pt", preprocessing={"size": 224})


def test_parse__path_and_random_init_together_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        spec_for(tmp_path, SMALL, "a.pt", init="random")
    with pytest.raises(ConfigError, match="give a path"):
        spec_for(tmp_path, SMALL, None)  # neither
    with pytest.raises(ConfigError, match="init must be"):
        spec_for(tmp_path, SMALL, None, init="zeros")


def test_parse__unknown_arch_family_lists_families(tmp_path):
    # the Registry raises KeyError (the CLI reports it like an EvalbenchError)
    with pytest.raises((ConfigError, KeyError)) as e:
        spec_for(tmp_path, "keras:resnet50", "a.pt")
    msg = str(e.value)
    assert "keras" in msg and all(f in msg for f in ("builtin", "timm", "torchvision"))
    with pytest.raises(ConfigError, match="FAMILY:NAME.*families: builtin, timm, torchvision"):
        spec_for(tmp_path, "resnet50", "a.pt")


def test_parse__mean_std_length_must_match_in_chans(tmp_path):
    with pytest.raises(ConfigError, match="in_chans=3"):
        spec_for(tmp_path, SMALL, "a.pt", preprocessing={"in_chans": 3, "mean": [0.5, 0.5], "std": [0.5]})
    with pytest.raises(ConfigError, match="in_chans=1"):
        spec_for(tmp_path, SMALL, "a.pt", preprocessing={"std": [0.2, 0.2, 0.2]})  # builtin default in_chans=1
    ok = spec_for(tmp_path, SMALL, "a.pt", preprocessing={"in_chans": 3, "mean": [0.5], "std": [0.2, 0.3, 0.4]})
    assert ok.data.in_chans == 3


def test_parse__defaults_and_relative_path(tmp_path):
    spec = spec_for(tmp_path, "timm:resnet18", "ckpts/a.pt")
    assert spec.path == tmp_path / "ckpts" / "a.pt" and not spec.random_init
    assert spec.weights == FileWeights(tmp_path / "ckpts" / "a.pt")
    assert spec.data.in_chans == 3 and len(spec.data.mean) == 3
    absolute = spec_for(tmp_path, SMALL, "/abs/a.pt")
    assert absolute.path == Path("/abs/a.pt") and absolute.data.mean == (0.5,)


# --- random-init baseline -------------------------------------------------------------------------


def test_random_init__deterministic_per_seed(tmp_path):
    def weights(seed: int) -> dict:
        enc, meta = load_encoder(spec_for(tmp_path, SMALL, None, init="random", init_seed=seed))
        assert meta == {"random_init": True, "init_seed": seed}
        return enc.model.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    # the baseline's identity is its seed (the arch sits beside it in the extract payload), no file
    specs = [spec_for(tmp_path, SMALL, None, init="random", init_seed=s) for s in (0, 0, 1)]
    assert [s.weights for s in specs] == [RandomWeights(0), RandomWeights(0), RandomWeights(1)]
    assert all(s.random_init and s.path is None for s in specs)
    ids = [weights_identity(s) for s in specs]
    assert ids == [{"random_init_seed": 0}, {"random_init_seed": 0}, {"random_init_seed": 1}]


def test_identity__is_the_file_sha256(tmp_path):
    import hashlib

    torch.save(small_source().model.state_dict(), tmp_path / "a.pt")
    spec = spec_for(tmp_path, SMALL, "a.pt")
    want = {"sha256": hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()}
    assert file_weights_identity(spec, hash_file=sha256_file) == want
    assert weights_identity(spec) == want  # what the plan keys the weights by
