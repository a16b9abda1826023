"""`evalbench inspect` and `evalbench convert` (evalbench.checkpoints.inspect / propose / convert, evalbench.cli):
the inspection in text and JSON; a state dict under unrelated names is mapped by inspect's checked
proposal and then gives the original model's numbers; a converted file loads with no rules and
carries its mapping; end to end, records name layout, candidate, rules and channel adaptation, and
a partially loaded encoder's row is marked."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from evalbench.checkpoints.inspect import inspect_checkpoint
from evalbench.cli import main
from evalbench.core.errors import ConfigError
from evalbench.features.artifact import Features
from evalbench.features.extract import extract_features
from evalbench.protocols import PROBES
from evalbench.results.store import RecordStore
from evalbench.results.tables import render_table
from evalbench.run.runner import run_suite
from evalbench.specs.suite import load_suite
from evalbench.specs.task import load_task, resolve_task
from tests.checkpoints.helpers import CPU, SMALL, TIMM, assert_same_numbers, load_encoder, source, spec_for
from tests.conftest import FAST_LINEAR, write_suite

pytest.importorskip("timm")


def scrambled(sd: dict) -> dict:
    """The same tensors in the same order under unrelated names."""
    return {"p" + hashlib.sha1(k.encode()).hexdigest()[:10]: v for k, v in sd.items()}


def _moco(tmp_path):
    q, k = source(seed=1), source(seed=2)
    sd = {**{"module.encoder_q." + n: v for n, v in q.model.state_dict().items()},
          **{"module.encoder_k." + n: v for n, v in k.model.state_dict().items()},
          "module.encoder_q.fc.0.weight": torch.zeros(4, 128), "module.queue": torch.zeros(128, 16)}
    torch.save({"epoch": 1, "state_dict": sd}, tmp_path / "moco.pth")
    return tmp_path / "moco.pth"


# --- inspect: text and JSON -----------------------------------------------------------------------------


def test_inspect__json_names_layout_candidates_drops_and_fit(tmp_path, capsys):
    path = _moco(tmp_path)
    assert main(["inspect", str(path), "--arch", SMALL, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info["format"], info["unpickled"], info["other_entries"]) == ("torch", False, ["epoch"])
    assert (info["layout"]["name"], info["layout"]["default"], info["selected"]) == ("moco", "query", "query")
    assert [(c["name"], c["tensors"], c["selected"]) for c in info["candidates"]] == [("query", 19, True),
                                                                                    ("key", 18, False)]
    assert info["candidates"][1]["values"] == sum(v.numel() for v in source().model.state_dict().values())
    assert info["prefix"] == "state_dict.module.encoder_q." and len(info["tensors"]) == 19
    assert info["tensors"][0] == {"name": "features.0.weight", "shape": [32, 1, 3, 3], "dtype": "float32"}
    assert info["dropped"]["state_dict.module.queue"] == "negative queue"
    assert info["dropped"]["state_dict.module.encoder_k.features.0.weight"] == "candidate key (not selected)"
    fit = info["fit"]
    assert fit["preprocessing"] == {"in_chans": 1, "input_size": None, "mean": [0.5], "std": [0.5],
                                    "interpolation": "bilinear"}  # the arch's default, recorded per checkpoint
    assert (fit["ok"], fit["filled"], fit["encoder_tensors"], fit["missing"], fit["unexpected"]) == (True, 18, 18, [], [])
    assert fit["dropped"] == {"state_dict.module.encoder_q.fc.0.weight": "head (fc)"} and info["proposal"] is None


def test_inspect__text_and_select(tmp_path, capsys):
    path = _moco(tmp_path)
    assert main(["inspect", str(path), "--arch", SMALL, "--select", "key"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^layout +moco: MoCo v1/v2", out, re.M)
    assert "candidates  query (19 tensors, " in out and "*key (18 tensors" in out
    assert "selected    key (`select:` in the suite), under prefix 'state_dict.module.encoder_k.'" in out
    assert "fit         loads strictly: 18 of 18 filled" in out
    assert "other       epoch (not weights)" in out
    assert main(["inspect", str(path)]) == 0  # without --arch: the file alone
    assert "give --arch" in capsys.readouterr().out


def test_inspect__a_file_that_does_not_fit_exits_1_and_lists(tmp_path, capsys):
    torch.save(source(arch="builtin:small-cnn-wide").model.state_dict(), tmp_path / "wide.pt")
    assert main(["inspect", str(tmp_path / "wide.pt"), "--arch", SMALL]) == 1
    out = capsys.readouterr().out
    assert "fit         does NOT load: 3 of 18 filled" in out  # the BatchNorm counters
    assert "mis-shaped  15: features.0.weight (64, 1, 3, 3) vs (32, 1, 3, 3)" in out
    assert "proposal    none: 6 encoder tensors have no checkpoint tensor of their shape left: features.0.weight" in out


def test_inspect__pickled_code_is_refused_naming_the_option(tmp_path, capsys):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{tmp_path / 'ran'}'",))

    torch.save({"w": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pt")
    assert main(["inspect", str(tmp_path / "evil.pt")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err and not (tmp_path / "ran").exists()


# --- the proposal -----------------------------------------------------------------------------------------


def test_proposal__scrambled_names_mapped_by_inspect_give_the_original_numbers(tmp_path, capsys):
    src = source(TIMM, seed=1, in_chans=3)
    torch.save({**scrambled(src.model.state_dict()), "pjunk": torch.zeros(7)}, tmp_path / "s.pth")
    spec = spec_for(tmp_path, TIMM, "s.pth")
    with pytest.raises(Exception, match="naming scheme differs"):
        load_encoder(spec)
    rules = tmp_path / "rules.yaml"
    assert main(["inspect", str(tmp_path / "s.pth"), "--arch", TIMM, "--write-rules", str(rules)]) == 1
    out = capsys.readouterr().out
    assert "proposal    90 tensors paired by shape in order, checked shape by shape: 90 rename rules, " \
           "1 checkpoint tensors left over (skip_unexpected)" in out
    written = yaml.safe_load(rules.read_text())
    assert written["skip_unexpected"] == ["pjunk"] and len(written["rename"]) == 90
    assert written["rename"][0] == {"from": "^" + re.escape(next(iter(scrambled(src.model.state_dict())))) + "$",
                                    "to": "conv1.0.weight"}
    spec = spec_for(tmp_path, TIMM, "s.pth", rules="rules.yaml")
    encoder, report = load_encoder(spec)
    assert report["renamed"] == 90 and report["rules"]["skip_unexpected"] == ["pjunk"]
    assert_same_numbers(encoder, src, spec)


def test_proposal__never_pairs_by_position_where_the_file_order_is_not_the_models(tmp_path, capsys):
    """safetensors stores tensors sorted by name: scrambled names lose the model's order, and pairing
    same-shaped tensors (BatchNorm weight / bias / running stats) by position would load garbage."""
    src = source(TIMM, seed=1, in_chans=3)
    save_file(scrambled(src.model.state_dict()), str(tmp_path / "s.safetensors"))
    info = inspect_checkpoint(tmp_path / "s.safetensors", arch=TIMM)
    assert not info["proposal"]["in_order"] and not info["proposal"]["checked"] and info["proposal"]["rename"] == []
    assert main(["inspect", str(tmp_path / "s.safetensors"), "--arch", TIMM, "--write-rules", str(tmp_path / "r.yaml")]) == 2
    captured = capsys.readouterr()
    assert "same-shaped tensors are not in the model's order in the file" in captured.out
    assert "no checked proposal to write" in captured.err and not (tmp_path / "r.yaml").exists()


def test_proposal__a_renamed_port_gets_prefix_rules(tmp_path):
    """A port that renamed modules (stem/stage) keeps the leaf names: one rule per module prefix."""
    src = source(TIMM, seed=1, in_chans=3)
    port = {re.sub(r"^layer(\d)\.", r"stage\1.", re.sub(r"^conv1\.", "stem.", k)): v
            for k, v in src.model.state_dict().items()}
    torch.save({"model": port}, tmp_path / "port.pth")
    info = inspect_checkpoint(tmp_path / "port.pth", arch=TIMM)
    p = info["proposal"]
    assert p["checked"] and p["skip_unexpected"] == []
    assert sorted(map(tuple, p["rename"])) == [(r"^stage1\.", "layer1."), (r"^stage2\.", "layer2."),
                                               (r"^stage3\.", "layer3."), (r"^stage4\.", "layer4."),
                                               (r"^stem\.", "conv1.")]
    rules = [{"from": a, "to": b} for a, b in p["rename"]]
    encoder, _ = load_encoder(spec_for(tmp_path, TIMM, "port.pth", rename=rules))
    assert_same_numbers(encoder, src, spec_for(tmp_path, TIMM, "port.pth", rename=rules))


def test_proposal__partly_matching_names_keep_their_prefix(tmp_path):
    src = source()
    sd = {"backbone." + k: v for k, v in src.model.state_dict().items()}
    sd["backbone.w5"] = sd.pop("backbone.features.5.weight")  # one tensor renamed
    torch.save(sd, tmp_path / "p.pt")
    p = inspect_checkpoint(tmp_path / "p.pt", arch=SMALL)["proposal"]
    assert p["rename"] == [[r"^backbone\.w5$", "backbone.features.5.weight"]] and p["checked"]


# --- rules in the suite ---------------------------------------------------------------------------------


def test_rules__bad_rules_fail_at_parse_time(tmp_path):
    with pytest.raises(ConfigError, match=r"rename\[0\]: rule '\(' -> 'x' is not a valid regex"):
        spec_for(tmp_path, SMALL, "a.pt", rename=[{"from": "(", "to": "x"}])
    with pytest.raises(ConfigError, match=r"rename\[0\]: missing required key 'to'"):
        spec_for(tmp_path, SMALL, "a.pt", rename=[{"from": "a"}])
    with pytest.raises(ConfigError, match=r"rules.yaml: file not found"):
        spec_for(tmp_path, SMALL, "a.pt", rules="rules.yaml")
    (tmp_path / "r.yaml").write_text("renames: []\n")
    with pytest.raises(ConfigError, match=r"unknown key 'renames'; known keys: select, rename"):
        spec_for(tmp_path, SMALL, "a.pt", rules="r.yaml")


def test_rules__file_then_entry_in_order(tmp_path):
    (tmp_path / "r.yaml").write_text("rename: [{from: '^a', to: b}]\nskip_unexpected: [x]\nselect: key\n")
    spec = spec_for(tmp_path, SMALL, "a.pt", rules="r.yaml", rename=[{"from": "^b", "to": "c"}], select="query")
    assert spec.rename == (("^a", "b"), ("^b", "c")) and spec.skip_unexpected == ("x",) and spec.select == "query"


# --- convert ---------------------------------------------------------------------------------------------


def test_convert__writes_mapped_weights_with_the_mapping_in_metadata(tmp_path, capsys):
    path = _moco(tmp_path)
    out = tmp_path / "clean.safetensors"
    assert main(["convert", str(path), "--arch", SMALL, "--out", str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == sorted(source().model.state_dict())
    assert (meta["evalbench_convert"], meta["arch"], meta["layout"], meta["selected"]) == ("1", SMALL, "moco", "query")
    assert meta["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert json.loads(meta["mapping"])["features.0.weight"] == "state_dict.module.encoder_q.features.0.weight"
    encoder, report = load_encoder(spec_for(tmp_path, SMALL, "clean.safetensors"))
    assert (report["layout"], report["dropped"]) == ("plain", {})
    reference, _ = load_encoder(spec_for(tmp_path, SMALL, "moco.pth"))
    assert all(torch.equal(a, b) for a, b in zip(encoder.model.state_dict().values(),
                                                   reference.model.state_dict().values()))


def test_convert__a_file_that_does_not_fit_writes_nothing(tmp_path, capsys):
    torch.save(source(arch="builtin:small-cnn-wide").model.state_dict(), tmp_path / "wide.pt")
    assert main(["convert", str(tmp_path / "wide.pt"), "--arch", SMALL, "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "shape mismatch" in capsys.readouterr().err and not (tmp_path / "o.safetensors").exists()


# --- end to end: records and the table -------------------------------------------------------------------


def _in_memory_numbers(encoder, spec, protocols) -> dict:
    splits = load_task(resolve_task("digits"))
    x = {s: extract_features(encoder, getattr(splits, s), cfg=spec.data, device=CPU) for s in ("train", "val", "test")}
    features = Features(x, {s: getattr(splits, s).labels for s in x}, 10)
    return {p.name: PROBES.get(p.implementation)(features, params=p.params, seed=0, device=CPU).metrics for p in protocols}


def test_run__dino_and_scrambled_checkpoints_give_the_in_memory_numbers(tmp_path):
    teacher, student = source(TIMM, seed=1, in_chans=3), source(TIMM, seed=2, in_chans=3)
    torch.save({"teacher": {"backbone." + k: v for k, v in teacher.model.state_dict().items()},
                "student": {"module.backbone." + k: v for k, v in student.model.state_dict().items()}},
               tmp_path / "dino.pth")
    torch.save(scrambled(teacher.model.state_dict()), tmp_path / "s.pth")
    assert main(["inspect", str(tmp_path / "s.pth"), "--arch", TIMM, "--write-rules", str(tmp_path / "rules.yaml")]) == 1
    partial = {k: v for k, v in student.model.state_dict().items() if k != "layer4.0.bn2.bias"}
    torch.save(partial, tmp_path / "partial.pth")
    prep = {"input_size": 8}
    suite = load_suite(write_suite(tmp_path / "suite.yaml", checkpoints=[
        {"name": "dino", "arch": TIMM, "path": "dino.pth", "preprocessing": prep},
        {"name": "dino-student", "arch": TIMM, "path": "dino.pth", "select": "student", "preprocessing": prep},
        {"name": "scrambled", "arch": TIMM, "path": "s.pth", "rules": "rules.yaml", "preprocessing": prep},
        {"name": "partial", "arch": TIMM, "path": "partial.pth", "skip_missing": ["layer4.0.bn2.bias"],
         "preprocessing": prep}], tasks=["digits"], protocols=["knn", FAST_LINEAR]))
    store = RecordStore(tmp_path / "res")
    summary = run_suite(suite, results=store, executor="local")
    assert summary.success and summary.ok == 8
    records = {(r.checkpoint["name"], r.protocol["name"]): r for r in store.records()}
    want = {"teacher": _in_memory_numbers(teacher, suite.checkpoints[0], suite.protocols),
            "student": _in_memory_numbers(student, suite.checkpoints[1], suite.protocols)}
    for name, ref in (("dino", "teacher"), ("dino-student", "student"), ("scrambled", "teacher")):
        for protocol in ("knn", "linear"):
            assert records[name, protocol].metrics == want[ref][protocol], (name, protocol)
    load = {name: records[name, "knn"].details["features"]["load"] for name, _ in records}
    assert (load["dino"]["layout"], load["dino"]["selected"], load["dino"]["selected_by"]) == ("dino", "teacher", "default")
    assert (load["dino-student"]["selected"], load["dino-student"]["selected_by"]) == ("student", "select")
    assert load["scrambled"]["renamed"] == 90 and len(load["scrambled"]["rules"]["rename"]) == 90
    assert load["partial"]["skipped"] == ["layer4.0.bn2.bias"]
    channels = records["dino", "knn"].details["features"]["channels"]
    assert channels == {"images": 1, "encoder": 3, "adapted": "grayscale repeated to 3 channels"}
    assert records["dino", "knn"].key != records["dino-student", "knn"].key  # select is part of the identity
    table = render_table(list(store.records()), fmt="csv")
    assert "partial [partial: 1 tensor at init]," in table
    assert sum("[partial" in line for line in table.splitlines()) == 1


def test_table__only_skipped_encoder_tensors_mark_a_row():
    """Absent BatchNorm counters (listed as skipped by records before issue 8) change no feature: no mark."""
    def rec(name, skipped):
        return {"checkpoint": {"name": name}, "task": {"name": "digits", "version": 1}, "seed": None,
                "protocol": {"name": "knn", "version": 1, "params": {}}, "status": "ok", "metrics": {"top1": 0.5},
                "created": "2026-01-01T00:00:00+00:00", "details": {"features": {"load": {"skipped": skipped}}}}

    table = render_table([rec("a", ["features.1.num_batches_tracked"]), rec("b", ["fc_norm.weight", "fc_norm.bias"]),
                          rec("c", [])], fmt="csv")
    assert table.splitlines()[1:] == ["a,50.0", "b [partial: 2 tensors at init],50.0", "c,50.0"]


def test_run__trust_pickle_from_the_command_line_and_the_record_says_so(tmp_path, capsys):
    torch.save({"state_dict": source().model.state_dict(), "best_acc": np.float64(71.5)}, tmp_path / "ck.pth")
    suite = write_suite(tmp_path / "suite.yaml", checkpoints=[{"name": "ck", "arch": SMALL, "path": "ck.pth"}],
                        tasks=["digits"], protocols=["knn"])
    args = ["run", str(suite), "--executor", "local", "--results", str(tmp_path / "res")]
    assert main(args) == 1
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(args + ["--trust-pickle"]) == 0
    ok = [r for r in RecordStore(tmp_path / "res").records() if r.ok]
    assert len(ok) == 1 and ok[0].details["features"]["load"]["unpickled"] is True
