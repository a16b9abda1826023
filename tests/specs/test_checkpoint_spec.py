"""Checkpoint suite entries (evalbench.specs.checkpoint): validated at parse time, with the loading
rules (select, rename, skip_missing, skip_unexpected, a rules file) in the extract identity, so other
rules never reuse old features, while entries without rules keep the keys they had before rules
existed and trust_pickle (which changes no number) changes no key."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from evalbench.core.errors import ConfigError
from evalbench.encoders import build_encoder
from evalbench.run.plan import plan_suite
from evalbench.specs.checkpoint import FileWeights, parse_checkpoint
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.suite import Suite
from evalbench.specs.task import resolve_task

SMALL = "builtin:small-cnn"


def spec_for(tmp_path: Path, arch: str, file, **extra):
    d = {"name": "ck", "arch": arch, **extra}
    if file is not None:
        d["path"] = file
    return parse_checkpoint(d, where="suite.yaml: checkpoints[0]", base_dir=tmp_path)


# --- validation -------------------------------------------------------------------------------------


def test_parse__unknown_key_named_with_known_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        spec_for(tmp_path, SMALL, "a.pt", weights="x")
    msg = str(e.value)
    assert "suite.yaml: checkpoints[0]" in msg and "'weights'" in msg
    assert all(k in msg for k in ("path", "select", "rename", "skip_missing", "skip_unexpected", "rules", "trust_pickle"))


def test_parse__unknown_preprocessing_key(tmp_path):
    with pytest.raises(ConfigError, match=r"preprocessing: unknown key 'size'.*input_size"):
        spec_for(tmp_path, SMALL, "a.pt", preprocessing={"size": 224})


def test_parse__path_and_random_init_together_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        spec_for(tmp_path, SMALL, "a.pt", init="random")
    with pytest.raises(ConfigError, match="give a path"):
        spec_for(tmp_path, SMALL, None)
    with pytest.raises(ConfigError, match="init must be"):
        spec_for(tmp_path, SMALL, None, init="zeros")


def test_parse__unknown_arch_family_lists_families(tmp_path):
    with pytest.raises((ConfigError, KeyError)) as e:  # the Registry raises KeyError (the CLI reports it)
        spec_for(tmp_path, "keras:resnet50", "a.pt")
    assert "keras" in str(e.value) and all(f in str(e.value) for f in ("builtin", "timm", "torchvision"))
    with pytest.raises(ConfigError, match="FAMILY:NAME.*families: builtin, timm, torchvision"):
        spec_for(tmp_path, "resnet50", "a.pt")


def test_parse__mean_std_length_must_match_in_chans(tmp_path):
    with pytest.raises(ConfigError, match="in_chans=3"):
        spec_for(tmp_path, SMALL, "a.pt", preprocessing={"in_chans": 3, "mean": [0.5, 0.5], "std": [0.5]})
    with pytest.raises(ConfigError, match="in_chans=1"):
        spec_for(tmp_path, SMALL, "a.pt", preprocessing={"std": [0.2, 0.2, 0.2]})
    ok = spec_for(tmp_path, SMALL, "a.pt", preprocessing={"in_chans": 3, "mean": [0.5], "std": [0.2, 0.3, 0.4]})
    assert ok.data.in_chans == 3


def test_parse__defaults_and_relative_path(tmp_path):
    spec = spec_for(tmp_path, "timm:resnet18", "ckpts/a.pt")
    assert spec.weights == FileWeights(tmp_path / "ckpts" / "a.pt") and not spec.random_init
    assert spec.data.in_chans == 3 and len(spec.data.mean) == 3
    assert (spec.select, spec.rename, spec.skip_unexpected, spec.trust_pickle) == (None, (), (), False)
    absolute = spec_for(tmp_path, SMALL, "/abs/a.pt")
    assert absolute.path == Path("/abs/a.pt") and absolute.data.mean == (0.5,)


@pytest.mark.parametrize("extra, message", [
    ({"select": 3}, "select must be a candidate name"),
    ({"rename": {"a": "b"}}, r"rename: expected a list of \{from: REGEX, to: REPLACEMENT\}"),
    ({"rename": [{"from": "a(", "to": "b"}]}, r"rename\[0\]: rule 'a\(' -> 'b' is not a valid regex"),
    ({"rename": [{"from": "a", "to": r"\2"}]}, r"rename\[0\]: rule 'a' -> '\\\\2' is not a valid"),
    ({"rename": [{"from": "a", "to": 1}]}, r"rename\[0\]: from and to must be strings"),
    ({"skip_unexpected": [1]}, r"skip_unexpected: expected a list of glob patterns"),
    ({"trust_pickle": "yes"}, "trust_pickle must be true or false"),
    ({"rules": ["r.yaml"]}, "rules must be the path of a rules file"),
])
def test_parse__bad_loading_rules(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        spec_for(tmp_path, SMALL, "a.pt", **extra)


# --- identity -----------------------------------------------------------------------------------------


@pytest.fixture
def suite(tmp_path):
    torch.manual_seed(0)
    torch.save(build_encoder(SMALL, in_chans=1).model.state_dict(), tmp_path / "w.pt")
    spec = spec_for(tmp_path, SMALL, "w.pt")
    return Suite("s", (spec,), (resolve_task("digits"),), (resolve_protocol("knn"),), (0,))


def _keys(suite, **over):
    return plan_suite(replace(suite, checkpoints=(replace(suite.checkpoints[0], **over),))).keys


@pytest.mark.parametrize("over", [{"select": "key"}, {"rename": (("^a", "b"),)}, {"skip_unexpected": ("x",)},
                                  {"skip_missing": ("features.1.*",)}], ids=lambda o: next(iter(o)))
def test_identity__loading_rules_change_the_key(suite, over):
    assert _keys(suite, **over) != _keys(suite)


def test_identity__no_rules_keep_the_old_payload_and_trust_pickle_changes_nothing(suite):
    extract = next(iter(plan_suite(suite).stages.values()))
    assert extract.kind == "extract" and "load_rules" not in extract.inputs["checkpoint"].rules_payload()
    assert _keys(suite, trust_pickle=True) == _keys(suite)


def test_identity__a_rules_file_counts_by_content_not_path(tmp_path, suite):
    (tmp_path / "a.yaml").write_text("rename: [{from: '^x', to: y}]\n")
    (tmp_path / "b.yaml").write_text("rename: [{from: '^x', to: y}]\n")
    (tmp_path / "c.yaml").write_text("rename: [{from: '^x', to: z}]\n")
    keys = {}
    for f in ("a", "b", "c"):
        spec = spec_for(tmp_path, SMALL, "w.pt", rules=f"{f}.yaml")
        keys[f] = plan_suite(replace(suite, checkpoints=(spec,))).keys
    assert keys["a"] == keys["b"] != keys["c"]
