"""Strict loading and safe reading (evalbench.checkpoints.read / mapping / load, evalbench.run.worker.load_encoder):
wrapped state dicts give the source model's features; a partial match fails listing missing,
mis-shaped and unexpected tensors with counts and the right hint (never a skip when nothing matched);
skips are for a few named tensors; unusable files and pickled code fail with a CheckpointError and
run nothing; the random-init baseline is reproducible."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from evalbench.checkpoints import LoadReport, LoadRules, MAX_SKIPPED_FRACTION, load_strict, read_checkpoint
from evalbench.core.errors import CheckpointError
from evalbench.core.filehash import sha256_file
from evalbench.encoders import build_encoder
from evalbench.run.plan import WEIGHTS_PLANNERS, PlanContext
from evalbench.specs.checkpoint import CheckpointSpec, RandomWeights, file_weights_identity
from tests.checkpoints.helpers import SMALL, feats, images, load_encoder, source, spec_for


def weights_identity(spec: CheckpointSpec) -> dict:
    """The weights part of the plan's identities (evalbench.run.plan)."""
    payload, upstream = WEIGHTS_PLANNERS[type(spec.weights)](spec, PlanContext())
    assert upstream is None
    return payload


def assert_loads_same_features(tmp_path: Path, file: str, src, **extra) -> dict:
    spec = spec_for(tmp_path, SMALL, file, **extra)
    encoder, report = load_encoder(spec)
    imgs = images(1, 8)
    want = feats(src, spec, imgs)
    np.testing.assert_array_equal(feats(encoder, spec, imgs), want)
    torch.manual_seed(123)
    assert not np.allclose(feats(build_encoder(SMALL, in_chans=1), spec, imgs), want, atol=1e-3)
    return report


# --- wrapped state dicts -----------------------------------------------------------------------


def test_load__plain_state_dict(tmp_path):
    src = source()
    torch.save(src.model.state_dict(), tmp_path / "plain.pt")
    report = assert_loads_same_features(tmp_path, "plain.pt", src)
    assert (report["layout"], report["prefix"], report["dropped"], report["skipped"]) == ("plain", "", {}, [])
    assert report["loaded"] == report["encoder_tensors"] == len(src.model.state_dict())
    assert (report["format"], report["unpickled"], report["selected_by"]) == ("torch", False, "default")


def test_load__legacy_non_zip_torch_save(tmp_path):
    src = source()
    torch.save(src.model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert_loads_same_features(tmp_path, "legacy.pth", src)


def test_load__safetensors_also_without_its_suffix(tmp_path):
    src = source()
    save_file(src.model.state_dict(), str(tmp_path / "w.safetensors"))
    assert assert_loads_same_features(tmp_path, "w.safetensors", src)["format"] == "safetensors"
    (tmp_path / "w.safetensors").rename(tmp_path / "w.bin")  # recognised by its header, not its name
    assert assert_loads_same_features(tmp_path, "w.bin", src)["format"] == "safetensors"


@pytest.mark.parametrize("wrap, prefix", [
    (lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}}, "state_dict.module."),
    (lambda sd: {"model": {"backbone." + k: v for k, v in sd.items()}, "epoch": 3}, "model.backbone."),
    (lambda sd: {"encoder." + k: v for k, v in sd.items()}, "encoder."),
    (lambda sd: {"net": {"module.encoder." + k: v for k, v in sd.items()}}, "net.module.encoder."),
], ids=["ddp", "model-backbone", "encoder", "net-module-encoder"])
def test_load__wrapper_prefixes_are_stripped(tmp_path, wrap, prefix):
    src = source()
    torch.save(wrap(src.model.state_dict()), tmp_path / "w.pth")
    assert assert_loads_same_features(tmp_path, "w.pth", src)["prefix"] == prefix


def test_load__old_checkpoint_without_batchnorm_counters(tmp_path):
    src = source()
    torch.save({k: v for k, v in src.model.state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "old.pt")
    report = assert_loads_same_features(tmp_path, "old.pt", src)
    assert report["defaulted"] == 3 and report["skipped"] == []  # counters do not change eval features: no mark


# --- strictness: the lists ---------------------------------------------------------------------------


def test_load__partial_match_lists_missing_misshaped_and_unexpected(tmp_path):
    sd = source().model.state_dict()
    del sd["features.1.bias"], sd["features.5.running_mean"]
    sd["features.9.weight"] = torch.zeros(3)  # mis-shaped (model: 128)
    sd["extra.scale"] = torch.zeros(1)
    sd["momentum.features.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, "partial.pth"))
    msg = str(e.value)
    assert "partial.pth (nested layout, candidate model, prefix 'state_dict.') does not fit builtin:small-cnn" in msg
    assert "15 of 18 encoder tensors filled" in msg
    assert "missing (2): features.1.bias, features.5.running_mean;" in msg
    assert "shape mismatch (checkpoint vs model) (1): features.9.weight (3,) vs (128,);" in msg
    assert "unexpected (2): state_dict.extra.scale, state_dict.momentum.features.0.weight;" in msg
    assert "check `arch:` (and `preprocessing: in_chans`); map the names with `rename:` rules" in msg
    assert "list checkpoint tensors that are not part of the encoder under `skip_unexpected:`" in msg
    assert "skip_missing" not in msg  # a mis-shaped tensor is never cured by a skip


def test_load__a_few_missing_tensors_suggest_skip_missing(tmp_path):
    sd = source().model.state_dict()
    del sd["features.1.bias"]
    torch.save(sd, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match=r"missing \(1\): features.1.bias; if these tensors may stay at "
                                              r"initialisation, list them under `skip_missing:` \(at most 1% "):
        load_encoder(spec_for(tmp_path, SMALL, "p.pt"))


def test_load__long_lists_show_counts_and_the_first_few(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, "r18.pth"))
    msg = str(e.value)
    assert "missing (15): features.0.weight, features.1.weight" in msg and "(+7 more)" in msg
    assert "unexpected (120): conv1.weight, bn1.weight" in msg and "(+112 more)" in msg
    assert "num_batches_tracked" not in msg.split("missing")[1].split(";")[0]  # never reported as missing


def test_load__nothing_matching_says_naming_differs_and_never_suggests_a_skip(tmp_path):
    src = source()
    torch.save({f"layer{i}": v for i, v in enumerate(src.model.state_dict().values())}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, "x.pth"))
    msg = str(e.value)
    assert "0 of 15 encoder tensors filled" in msg
    assert "naming scheme differs from builtin:small-cnn's (0 of 15 names match)" in msg
    assert f"evalbench inspect {tmp_path / 'x.pth'} --arch builtin:small-cnn" in msg and "rename:" in msg
    assert "skip_missing" not in msg and "skip_unexpected" not in msg


def test_load__the_issue_case_skip_everything_is_refused(tmp_path):
    """Following the old hint, `skip_missing: ["*"]` left every tensor random and exited 0: now an error."""
    torchvision = pytest.importorskip("torchvision")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    for extra in ({"skip_missing": ["*"]}, {"skip_missing": ["*"], "skip_unexpected": ["*"]}):
        with pytest.raises(CheckpointError) as e:
            load_encoder(spec_for(tmp_path, SMALL, "r18.pth", **extra))
        msg = str(e.value)
        assert "0 of 15 encoder tensors filled" in msg
        assert "skip_missing leaves 15 tensors at initialisation, 100.0% of the encoder's parameter values" in msg
        assert "at most 1%" in msg and "naming scheme differs" in msg


def test_load__wider_cnn_is_a_shape_mismatch_naming_arch(tmp_path):
    torch.save(source(arch="builtin:small-cnn-wide").model.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError) as e:
        load_encoder(spec_for(tmp_path, SMALL, "wide.pt"))
    msg = str(e.value)
    assert "features.0.weight (64, 1, 3, 3) vs (32, 1, 3, 3)" in msg and "check `arch:`" in msg


def test_load__rgb_weights_into_grayscale_encoder_names_in_chans(tmp_path):
    torch.save(source(in_chans=3).model.state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(CheckpointError, match=r"features.0.weight \(32, 3, 3, 3\) vs \(32, 1, 3, 3\).*in_chans"):
        load_encoder(spec_for(tmp_path, SMALL, "rgb.pt"))


# --- skips --------------------------------------------------------------------------------------------


def test_skip_missing__a_named_tensor_stays_at_init_and_is_reported(tmp_path):
    src = source()
    torch.save({k: v for k, v in src.model.state_dict().items() if k != "features.1.bias"}, tmp_path / "p.pt")
    encoder, report = load_encoder(spec_for(tmp_path, SMALL, "p.pt", skip_missing=["features.1.b*"]))
    assert report["skipped"] == ["features.1.bias"] and 0 < report["skipped_fraction"] < MAX_SKIPPED_FRACTION
    assert report["rules"]["skip_missing"] == ["features.1.b*"]
    got = encoder.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.model.state_dict().items() if k != "features.1.bias")


def test_skip_missing__over_the_stated_fraction_is_an_error(tmp_path):
    src = source()
    torch.save({k: v for k, v in src.model.state_dict().items() if not k.startswith("features.8")}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match=r"skip_missing leaves 1 tensor at initialisation, 79.0% .* at most 1%"):
        load_encoder(spec_for(tmp_path, SMALL, "p.pt", skip_missing=["features.8.*"]))


def test_skip_missing__a_pattern_does_not_excuse_other_missing_tensors():
    sd = {k: v for k, v in source().model.state_dict().items() if k not in ("features.1.bias", "features.4.weight")}
    from evalbench.checkpoints import RawCheckpoint

    with pytest.raises(CheckpointError, match=r"missing \(1\): features.4.weight"):
        load_strict(build_encoder(SMALL, in_chans=1).model, RawCheckpoint(sd, "torch"), arch=SMALL,
                    rules=LoadRules(skip_missing=("features.1.*",)))


def test_skip_missing__a_single_string_is_one_pattern_not_characters(tmp_path):
    """`skip_missing: "features.1.*"` (a YAML string) must not become the patterns 'f', 'e', ..., '*'."""
    src = source()
    torch.save({k: v for k, v in src.model.state_dict().items() if k != "features.0.weight"}, tmp_path / "p.pt")
    spec = spec_for(tmp_path, SMALL, "p.pt", skip_missing="features.1.*")
    assert spec.skip_missing == ("features.1.*",)
    with pytest.raises(CheckpointError, match="features.0.weight"):
        load_encoder(spec)


def test_skip_unexpected__drops_named_checkpoint_tensors(tmp_path):
    src = source()
    torch.save({**src.model.state_dict(), "ema_decay": torch.tensor(0.99), "aux.weight": torch.zeros(2)},
               tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match=r"unexpected \(2\): ema_decay, aux.weight"):
        load_encoder(spec_for(tmp_path, SMALL, "p.pt"))
    report = assert_loads_same_features(tmp_path, "p.pt", src, skip_unexpected=["ema_decay", "aux.*"])
    assert report["dropped"] == {"skip_unexpected": 2}


def test_load_strict__report_fields():
    src = source()
    from evalbench.checkpoints import RawCheckpoint

    raw = RawCheckpoint({**{"encoder." + k: v for k, v in src.model.state_dict().items()},
                         "proj_head.0.weight": torch.zeros(3)}, "torch")
    report = load_strict(build_encoder(SMALL, in_chans=1).model, raw, arch=SMALL)
    assert isinstance(report, LoadReport)
    assert (report.prefix, report.dropped, report.skipped) == ("encoder.", {"proj_head.0.weight": "head (proj_head)"}, ())
    assert report.loaded == len(src.model.state_dict()) and len(report.mapping) == report.loaded
    assert report.mapping["features.0.weight"] == "encoder.features.0.weight"


# --- reading: unusable files and safety --------------------------------------------------------------


def _write(path: Path, sd: dict) -> None:
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "epoch": 1}, path)


@pytest.mark.parametrize("name", ["ck.pth", "ck.safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["half", "empty"])
def test_read__truncated_file_is_a_checkpoint_error(tmp_path, name, keep):
    path = tmp_path / name
    _write(path, source().model.state_dict())
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


def test_read__pickled_code_is_refused_naming_the_global_and_the_option(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": source().model.state_dict(), "args": _Payload(marker)}, path)
    for attempt in (lambda: read_checkpoint(path), lambda: load_encoder(spec_for(tmp_path, SMALL, "evil.pth"))):
        with pytest.raises(CheckpointError) as e:
            attempt()
        assert not marker.exists(), "weights-only loading must not run pickled code"
        msg = str(e.value)
        assert str(path) in msg and f"pickles a {os.system.__module__}.system object" in msg
        assert "--trust-pickle" in msg and "trust_pickle: true" in msg and "re-save" in msg
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


def test_read__trust_pickle_loads_a_trusted_file_and_the_report_says_so(tmp_path):
    src = source()
    # a numpy scalar (e.g. a best accuracy) is a pickled object weights-only loading refuses
    torch.save({"state_dict": src.model.state_dict(), "best_acc": np.float64(71.5)}, tmp_path / "trusted.pth")
    with pytest.raises(CheckpointError, match=r"pickles a numpy\..*--trust-pickle"):
        load_encoder(spec_for(tmp_path, SMALL, "trusted.pth"))
    report = assert_loads_same_features(tmp_path, "trusted.pth", src, trust_pickle=True)
    assert report["unpickled"] is True


def test_read__whole_pickled_module_is_refused_with_the_fix(tmp_path):
    torch.save(source().model, tmp_path / "module.pt")  # torch.save(model), not model.state_dict()
    with pytest.raises(CheckpointError, match=r"pickles a evalbench.encoders.builtin.SmallCNN object.*--trust-pickle.*"
                                              r"re-save the weights with torch.save\(model.state_dict\(\)"):
        read_checkpoint(tmp_path / "module.pt")
    assert len(read_checkpoint(tmp_path / "module.pt", trust_pickle=True).tensors) == 18


def test_read__training_args_namespace_is_allowed(tmp_path):
    """DINO / solo-learn checkpoints carry `args` (argparse.Namespace) beside the weights."""
    src = source()
    torch.save({"args": argparse.Namespace(lr=0.1), "student": src.model.state_dict()}, tmp_path / "s.pth")
    raw = read_checkpoint(tmp_path / "s.pth")
    assert set(raw.tensors) == {"student." + k for k in src.model.state_dict()} and raw.other == ("args",)


def test_read__file_without_tensors_is_a_checkpoint_error(tmp_path):
    torch.save({"epoch": 3, "args": {"lr": 0.1}, "optimizer": {"state": {0: {"m": torch.zeros(2)}}}},
               tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"holds no tensors outside training state \(entries: epoch, args, "
                                              r"optimizer\)"):
        read_checkpoint(tmp_path / "meta.pt")


# --- the random-init baseline and identities ------------------------------------------------------------


def test_random_init__deterministic_per_seed(tmp_path):
    def weights(seed: int) -> dict:
        enc, meta = load_encoder(spec_for(tmp_path, SMALL, None, init="random", init_seed=seed))
        assert meta == {"random_init": True, "init_seed": seed}
        return enc.model.state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    specs = [spec_for(tmp_path, SMALL, None, init="random", init_seed=s) for s in (0, 0, 1)]
    assert [s.weights for s in specs] == [RandomWeights(0), RandomWeights(0), RandomWeights(1)]
    assert [weights_identity(s) for s in specs] == [{"random_init_seed": 0}, {"random_init_seed": 0},
                                                    {"random_init_seed": 1}]


def test_identity__is_the_file_sha256(tmp_path):
    import hashlib

    torch.save(source().model.state_dict(), tmp_path / "a.pt")
    spec = spec_for(tmp_path, SMALL, "a.pt")
    want = {"sha256": hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()}
    assert file_weights_identity(spec, hash_file=sha256_file) == want
    assert weights_identity(spec) == want
