"""The pretraining config: per-method defaults fill what the YAML leaves out, every knob is
checked (type, range, known names, applicability to the method) when the file is read with an
error naming the file and key, and only the knobs a method reads enter its identity."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from evalbench.core.errors import ConfigError
from evalbench.pretrain import config as C
from evalbench.pretrain.config import (APPLIES, KNOBS, METHOD_DEFAULTS, PretrainConfig, apply_overrides,
                                       load_pretrain_config, parse_pretrain_config)

REPO = Path(__file__).resolve().parents[2]
PREP = {"in_chans": 1, "mean": [0.5], "std": [0.5], "input_size": 28}


def raw(method: str = "simclr", **over) -> dict:
    d = {"method": method, "arch": "builtin:small-cnn", "preprocessing": PREP, "task": "mnist5k"}
    d.update(over)
    return d


def parse(method: str = "simclr", **over) -> PretrainConfig:
    return parse_pretrain_config(raw(method, **over), where="cfg.yaml")


@pytest.mark.parametrize("method", sorted(METHOD_DEFAULTS))
def test_config__every_method_parses_from_its_defaults_alone(method):
    cfg = parse(method)
    assert cfg.method == method and cfg.data.input_size == 28 and cfg.task == "mnist5k"
    json.dumps(cfg.as_dict())  # plain JSON values
    assert parse_pretrain_config(cfg.as_dict(), where="round trip") == cfg


def test_config__missing_knobs_take_the_methods_defaults():
    simclr, moco, byol, simsiam, sup = (parse(m) for m in ("simclr", "moco", "byol", "simsiam", "supervised"))
    assert simclr.loss.temperature == 0.5 and simclr.head.kind == "mlp" and not simclr.predictor.enabled
    assert moco.loss.temperature == 0.2 and moco.queue.size == 4096
    assert (moco.ema.momentum, moco.ema.schedule) == (0.99, "constant")
    assert byol.predictor.enabled and (byol.ema.momentum, byol.ema.schedule) == (0.99, "cosine")
    assert simsiam.predictor.enabled and simsiam.loss.stop_gradient
    assert simsiam.head.depth == 3 and simsiam.head.bn_out
    assert sup.head.kind == "none" and not sup.augment.crop.enabled
    # an explicit knob wins, its siblings keep the default
    cfg = parse("moco", loss={"temperature": 0.07}, augment={"crop": {"scale": [0.5, 1]}})
    assert cfg.loss.temperature == 0.07 and cfg.augment.crop.scale == (0.5, 1.0) and cfg.augment.crop.enabled


def test_config__the_brief_example_without_inapplicable_sections_parses(tmp_path):
    doc = yaml.safe_load("""
method: simclr
arch: builtin:small-cnn
preprocessing: {in_chans: 1, mean: [0.5], std: [0.5], input_size: 28}
task: mnist5k
seed: 0
epochs: 10
batch_size: 256
checkpoint_every: 1
optimizer: {name: sgd, lr: 0.06, weight_decay: 5.0e-4, momentum: 0.9, warmup_epochs: 0, schedule: cosine}
head: {kind: mlp, hidden_dim: 512, out_dim: 128, depth: 2, bn_out: false}
loss: {temperature: 0.5}
augment:
  crop: {enabled: true, scale: [0.2, 1.0]}
  color_jitter: {enabled: false, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8}
  grayscale: {enabled: false, p: 0.2}
  blur: {enabled: false, sigma: [0.1, 2.0], p: 0.5}
  flip: {enabled: true, p: 0.5}
  rotation: {enabled: false, degrees: 15, p: 0.5}
""")
    path = tmp_path / "simclr.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_pretrain_config(path)
    assert cfg.optimizer.weight_decay == 5e-4 and cfg.augment.rotation.degrees == 15.0
    assert cfg.knobs()["augment.crop.scale"] == [0.2, 1.0] and cfg.knobs()["loss.temperature"] == 0.5


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "pretrain").glob("*.yaml")), ids=lambda p: p.name)
def test_config__shipped_examples_parse(path):
    load_pretrain_config(path)


def test_config__as_dict_and_knobs_hold_only_what_the_method_reads():
    d = parse("simclr").as_dict()
    assert {"queue", "ema", "predictor"}.isdisjoint(d) and d["loss"] == {"temperature": 0.5}
    assert "checkpoint_every" not in d and d["preprocessing"]["input_size"] == 28
    k = parse("simsiam").knobs()
    assert "loss.stop_gradient" in k and "loss.temperature" not in k and "queue.size" not in k
    assert k["augment.crop.scale"] == [0.2, 1.0] and k["method"] == "simsiam"
    sections = {p.split(".")[0] for p in parse("supervised").knobs()}
    assert sections.isdisjoint({"head", "predictor", "loss", "ema", "queue"}) and "augment" in sections
    # every knob path is one apply_overrides accepts
    assert set(parse("moco").knobs()) <= set(C.known_paths())


def test_config__changing_an_inapplicable_default_never_changes_the_identity(monkeypatch):
    before = parse("simclr").as_dict()
    defaults = copy.deepcopy(METHOD_DEFAULTS)
    defaults["simclr"]["queue"]["size"] = 123
    defaults["simclr"]["ema"]["momentum"] = 0.5
    defaults["simclr"]["loss"]["stop_gradient"] = True
    monkeypatch.setattr(C, "METHOD_DEFAULTS", defaults)
    after = parse("simclr")
    assert after.queue.size == 123 and after.as_dict() == before
    defaults["simclr"]["loss"]["temperature"] = 0.3  # an applicable one does
    assert parse("simclr").as_dict() != before


def test_config__applicability_is_a_table_consistent_with_the_knobs():
    for method, reads in APPLIES.items():
        for entry in reads:
            assert any(k == entry or k.startswith(entry + ".") for k in KNOBS), (method, entry)


@pytest.mark.parametrize("method, section, message", [
    ("simsiam", {"queue": {"size": 16}}, "knob 'queue' does not apply to method 'simsiam' (it applies to: moco)"),
    ("byol", {"queue": {"size": 16}}, "knob 'queue' does not apply to method 'byol'"),
    ("simclr", {"queue": {"size": 16}}, "knob 'queue' does not apply to method 'simclr'"),
    ("simclr", {"ema": {"momentum": 0.9}}, "knob 'ema' does not apply to method 'simclr' (it applies to: moco, byol)"),
    ("simsiam", {"ema": {"momentum": 0.9}}, "knob 'ema' does not apply"),
    ("simclr", {"predictor": {"enabled": True}}, "knob 'predictor' does not apply to method 'simclr'"),
    ("moco", {"predictor": {"enabled": True}}, "knob 'predictor' does not apply to method 'moco'"),
    ("byol", {"loss": {"temperature": 0.1}}, "knob 'loss' does not apply to method 'byol'"),
    ("simsiam", {"loss": {"temperature": 0.1}}, "knob 'loss.temperature' does not apply to method 'simsiam' "
                                                "(it applies to: simclr, moco)"),
    ("simclr", {"loss": {"stop_gradient": True}}, "knob 'loss.stop_gradient' does not apply to method 'simclr' "
                                                 "(it applies to: simsiam)"),
    ("moco", {"loss": {"stop_gradient": True}}, "knob 'loss.stop_gradient' does not apply"),
    ("supervised", {"head": {"kind": "mlp"}}, "knob 'head' does not apply to method 'supervised'"),
    ("supervised", {"loss": {}}, "knob 'loss' does not apply to method 'supervised'"),
])
def test_config__a_knob_the_method_does_not_read_is_an_error(method, section, message):
    with pytest.raises(ConfigError) as e:
        parse(method, **section)
    assert message in str(e.value) and str(e.value).startswith("cfg.yaml: ")


def test_config__unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"cfg.yaml: method: unknown method 'simclrr'; known: simclr, moco, byol"):
        parse("simclrr")


@pytest.mark.parametrize("over, message", [
    ({"epoch": 3}, r"cfg.yaml: unknown key 'epoch'; known keys: method, arch, .*epochs"),
    ({"optimizer": {"lrr": 0.1}}, r"cfg.yaml: optimizer: unknown key 'lrr'; known keys: name, lr, weight_decay"),
    ({"augment": {"crop": {"scal": [0.2, 1]}}}, r"augment.crop: unknown key 'scal'; known keys: enabled, scale"),
    ({"augment": {"solarize": {}}}, r"augment: unknown key 'solarize'; known keys: crop, color_jitter"),
    ({"preprocessing": {"size": 28}}, r"preprocessing: unknown key 'size'"),
    ({"optimizer": 0.1}, r"optimizer must be a mapping of name, lr"),
])
def test_config__unknown_keys_at_any_level_list_the_known_ones(over, message):
    with pytest.raises(ConfigError, match=message):
        parse("simclr", **over)


def test_config__missing_required_keys():
    with pytest.raises(ConfigError, match="missing required key 'task'"):
        parse_pretrain_config({"method": "simclr", "arch": "builtin:small-cnn"}, where="cfg.yaml")
    with pytest.raises(ConfigError, match="arch: .*FAMILY:NAME"):
        parse("simclr", arch="small-cnn")


@pytest.mark.parametrize("over, message", [
    ({"optimizer": {"lr": True}}, "optimizer.lr must be a finite number > 0.0, got True"),
    ({"optimizer": {"lr": "1e-3"}}, "YAML reads a number like 1e-3 as a string"),
    ({"optimizer": {"lr": math.nan}}, "optimizer.lr must be a finite number"),
    ({"loss": {"temperature": math.inf}}, "loss.temperature must be a finite number"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1"),
    ({"batch_size": True}, "batch_size must be an integer >= 2"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"augment": {"flip": {"enabled": "yes"}}}, "augment.flip.enabled must be true or false"),
    ({"augment": {"crop": {"scale": 0.5}}}, "augment.crop.scale must be a pair"),
    ({"augment": {"crop": {"scale": [0.2, "1"]}}}, "augment.crop.scale must be a pair"),
    ({"head": {"hidden_dim": 64.0}}, "head.hidden_dim must be an integer >= 1"),
])
def test_config__wrong_types_are_errors(over, message):
    with pytest.raises(ConfigError, match="cfg.yaml: ") as e:
        parse("simclr", **over)
    assert message in str(e.value)


@pytest.mark.parametrize("method, over, message", [
    ("simclr", {"loss": {"temperature": 0.0}}, "loss.temperature must be a finite number > 0.0"),
    ("simclr", {"optimizer": {"lr": -0.1}}, "optimizer.lr must be"),
    ("simclr", {"optimizer": {"weight_decay": -1e-4}}, "optimizer.weight_decay must be a finite number >= 0.0"),
    ("simclr", {"optimizer": {"momentum": 1.0}}, "optimizer.momentum must be a finite number >= 0.0 and < 1.0"),
    ("simclr", {"optimizer": {"momentum": -0.1}}, "optimizer.momentum"),
    ("simclr", {"optimizer": {"warmup_epochs": -1}}, "optimizer.warmup_epochs must be an integer >= 0"),
    ("simclr", {"epochs": 3, "optimizer": {"warmup_epochs": 4}}, "warmup_epochs (4) must be <= epochs (3)"),
    ("byol", {"ema": {"momentum": 1.5}}, "ema.momentum must be a finite number >= 0.0 and <= 1.0"),
    ("moco", {"ema": {"momentum": -0.01}}, "ema.momentum"),
    ("simclr", {"epochs": 0}, "epochs must be an integer >= 1"),
    ("simclr", {"batch_size": 1}, "batch_size must be an integer >= 2"),
    ("simclr", {"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
    ("moco", {"queue": {"size": 0}}, "queue.size must be an integer >= 1"),
    ("simclr", {"head": {"out_dim": 0}}, "head.out_dim"),
    ("simclr", {"head": {"depth": 0}}, "head.depth must be an integer >= 1"),
    ("simclr", {"head": {"kind": "mlp", "depth": 1}}, "head.depth must be >= 2 for kind 'mlp'"),
    ("byol", {"predictor": {"hidden_dim": 0}}, "predictor.hidden_dim"),
    ("simclr", {"augment": {"flip": {"p": 1.2}}}, "augment.flip.p must be a finite number >= 0.0 and <= 1.0"),
    ("simclr", {"augment": {"color_jitter": {"p": -0.1}}}, "augment.color_jitter.p"),
    ("simclr", {"augment": {"color_jitter": {"hue": 0.6}}}, "augment.color_jitter.hue"),
    ("simclr", {"augment": {"color_jitter": {"brightness": -0.1}}}, "augment.color_jitter.brightness"),
    ("simclr", {"augment": {"crop": {"scale": [0.0, 1.0]}}}, "with 0 < lo <= hi <= 1.0"),
    ("simclr", {"augment": {"crop": {"scale": [0.8, 0.2]}}}, "augment.crop.scale"),
    ("simclr", {"augment": {"crop": {"scale": [0.2, 1.5]}}}, "augment.crop.scale"),
    ("simclr", {"augment": {"blur": {"sigma": [0.0, 2.0]}}}, "augment.blur.sigma"),
    ("simclr", {"augment": {"blur": {"sigma": [2.0, 1.0]}}}, "augment.blur.sigma"),
    ("simclr", {"augment": {"rotation": {"degrees": 270}}}, "augment.rotation.degrees"),
])
def test_config__out_of_range_values_are_errors(method, over, message):
    with pytest.raises(ConfigError) as e:
        parse(method, **over)
    assert message in str(e.value) and str(e.value).startswith("cfg.yaml: ")


@pytest.mark.parametrize("over, message", [
    ({"optimizer": {"name": "adam"}}, "optimizer.name: unknown value 'adam'; known: adamw, lars, sgd"),
    ({"optimizer": {"schedule": "step"}}, "optimizer.schedule: unknown value 'step'; known: constant, cosine"),
    ({"head": {"kind": "transformer"}}, "head.kind: unknown value 'transformer'; known: linear, mlp, none"),
])
def test_config__unknown_names_list_the_known_ones(over, message):
    with pytest.raises(ConfigError) as e:
        parse("simclr", **over)
    assert message in str(e.value)


def test_config__unknown_ema_schedule_lists_the_known_ones():
    with pytest.raises(ConfigError, match="ema.schedule: unknown value 'linear'; known: constant, cosine"):
        parse("byol", ema={"schedule": "linear"})


def test_config__load_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw("simclr", loss={"temperature": -1})))
    with pytest.raises(ConfigError, match=f"{path}: loss.temperature"):
        load_pretrain_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_pretrain_config(tmp_path / "missing.yaml")


def test_config__apply_overrides_sets_dotted_paths_without_touching_the_input():
    base = raw("simclr", loss={"temperature": 0.5})
    frozen = copy.deepcopy(base)
    out = apply_overrides(base, {"loss.temperature": 0.1, "augment.crop.scale": [0.5, 1.0], "batch_size": 64,
                                 "preprocessing.input_size": 32}, where="sweep.yaml: point 1")
    assert base == frozen
    cfg = parse_pretrain_config(out, where="sweep")
    assert (cfg.loss.temperature, cfg.augment.crop.scale, cfg.batch_size) == (0.1, (0.5, 1.0), 64)
    assert cfg.data.input_size == 32 and cfg.data.mean == (0.5,)


def test_config__apply_overrides_fails_on_an_unknown_path_listing_the_known_ones():
    message = r"sweep.yaml: unknown knob 'loss.temprature' \(did you mean 'loss.temperature'\?\); known: method, "
    with pytest.raises(ConfigError, match=message):
        apply_overrides(raw(), {"loss.temprature": 0.1}, where="sweep.yaml")
    # a known path that does not apply to the method fails when the result is parsed
    out = apply_overrides(raw("simclr"), {"queue.size": 16}, where="sweep.yaml")
    with pytest.raises(ConfigError, match="knob 'queue' does not apply to method 'simclr'"):
        parse_pretrain_config(out, where="sweep.yaml")
