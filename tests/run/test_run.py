"""End to end: `evalbench run` through Ray and in-process, resume, bad input mid-run, table."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


from evalbench.cli import main
from evalbench.results.store import RecordStore
from evalbench.run.runner import run_suite
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.suite import load_suite
from tests.conftest import FAST_LINEAR, PREP, write_suite

REPO = Path(__file__).resolve().parents[2]
RANDOM = {"name": "random", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}


def _records(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (results / "records").glob("*.json")}


def test_run__ray_end_to_end_on_digits(tmp_path, ray_session, saved_small_cnn, capsys):
    suite = write_suite(tmp_path / "suite.yaml", checkpoints=[RANDOM, {**RANDOM, "name": "saved", "init": None}],
                        tasks=["digits"], protocols=["knn", FAST_LINEAR], seeds=[0, 1])
    text = suite.read_text().replace("init: null", f"path: {saved_small_cnn}")
    suite.write_text(text)
    assert main(["run", str(suite), "--results", str(tmp_path / "res")]) == 0
    records = _records(tmp_path / "res")
    assert len(records) == 2 * 1 * 2  # knn and linear are deterministic: once each, whatever `seeds` says
    for stem, r in records.items():
        assert r["status"] == "ok" and r["env"]["device"] in ("cpu", "cuda") and r["key"] == stem
        assert r["seed"] is None and r["protocol"]["stochastic"] is False
        assert r["task"]["name"] == "digits" and r["task"]["version"] == 1 and len(r["task"]["split_sha256"]) == 64
        assert r["protocol"]["version"] == resolve_protocol(r["protocol"]["name"]).version
        assert r["env"]["torch"].startswith("2.")
        assert r["env"]["node"], "Ray records name the node that ran them"
    for name in ("random", "saved"):  # one extraction per (checkpoint, task), shared by both probes through Ray
        feats = [r for r in records.values() if r["checkpoint"]["name"] == name]
        assert len({r["features"] for r in feats}) == 1
        assert {r["details"]["features"]["cache"] for r in feats} == {"miss"}
    saved = [r for r in records.values() if r["checkpoint"]["name"] == "saved"]
    assert all(len(r["checkpoint"]["sha256"]) == 64 for r in saved)
    knn = next(r for r in saved if r["protocol"]["name"] == "knn")
    assert set(knn["metrics"]) == {"top1_k20_T0.07", "top1_k200_T0.1"}
    assert knn["metrics"]["top1_k20_T0.07"] > 0.5  # random conv features on digits are far above chance
    lin = next(r for r in saved if r["protocol"]["name"] == "linear")
    assert lin["details"]["l2"] in (1e-4, 1e-2)
    out = capsys.readouterr().out
    assert "random (random init)" in out and "digits<br>knn@1 k20 T0.07" in out
    assert "±" not in out  # deterministic numbers show no spread


def test_run__features_extracted_once_per_checkpoint_and_task(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"],
                                   protocols=["knn", FAST_LINEAR], seeds=[0, 1, 2]))
    store = RecordStore(tmp_path / "res")
    first = run_suite(suite, results=store, executor="local")
    assert first.ok == 2 and first.stages_run == {"extract": 1, "probe": 2}
    assert {r.details["features"]["cache"] for r in store.records()} == {"miss"}
    assert len(list((tmp_path / "res" / "artifacts" / "features").iterdir())) == 1
    for p in store.records_dir.glob("*.json"):
        p.unlink()
    second = run_suite(suite, results=store, executor="local")
    assert second.ok == 2 and second.stages_run == {"probe": 2}  # the stored features are reused
    assert {r.details["features"]["cache"] for r in store.records()} == {"hit"}
    third = run_suite(suite, results=store, executor="local")
    assert third.skipped == 2 and third.stages_run == {}  # nothing to do: nothing runs


def test_run__resume_reruns_exactly_the_deleted_job(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM, {**RANDOM, "name": "r2", "init_seed": 2}],
                                   tasks=["digits"], protocols=["knn", FAST_LINEAR]))
    store = RecordStore(tmp_path / "res")
    first = run_suite(suite, results=store, executor="local")
    assert first.ok == 4
    before = _records(tmp_path / "res")
    victim = sorted(before)[1]
    store.path(victim).unlink()
    second = run_suite(suite, results=store, executor="local")
    assert (second.ok, second.skipped, second.failed) == (1, 3, [])
    assert second.stages_run == {"probe": 1}
    after = _records(tmp_path / "res")
    assert set(after) == set(before)
    assert all(after[k] == before[k] for k in before if k != victim)  # untouched records are byte-identical data
    assert after[victim]["metrics"] == before[victim]["metrics"]  # and the rerun reproduces the number


def test_run__bad_checkpoints_fail_their_jobs_and_the_rest_completes(tmp_path, ray_session, saved_small_cnn):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved_small_cnn.read_bytes()[:2000])
    ckpts = [RANDOM,
             {"name": "missing", "arch": "builtin:small-cnn", "path": str(tmp_path / "nope.pt"), "preprocessing": PREP},
             {"name": "truncated", "arch": "builtin:small-cnn", "path": str(truncated), "preprocessing": PREP},
             {"name": "wrong-arch", "arch": "builtin:small-cnn-wide", "path": str(saved_small_cnn), "preprocessing": PREP}]
    suite = write_suite(tmp_path / "s.yaml", checkpoints=ckpts, tasks=["digits"], protocols=["knn"])
    assert main(["run", str(suite), "--results", str(tmp_path / "res")]) == 1
    by_name = {r["checkpoint"]["name"]: r for r in _records(tmp_path / "res").values()}
    assert by_name["random"]["status"] == "ok"
    assert "does not exist" in by_name["missing"]["error"] and "nope.pt" in by_name["missing"]["error"]
    assert "could not be read" in by_name["truncated"]["error"] and "truncated or corrupt" in by_name["truncated"]["error"]
    assert "does not fit builtin:small-cnn-wide" in by_name["wrong-arch"]["error"]
    assert "shape mismatch" in by_name["wrong-arch"]["error"]
    for name in ("missing", "truncated", "wrong-arch"):
        assert by_name[name]["status"] == "error" and by_name[name]["metrics"] == {}


def test_run__task_with_absent_data_fails_clearly(tmp_path):
    task = tmp_path / "fm.yaml"
    task.write_text(f"name: fm-elsewhere\nversion: 1\nloader: fashion-mnist-idx\nroot: {tmp_path / 'empty'}\n"
                    "num_classes: 10\nsplits: {file: fm.json}\n")
    (tmp_path / "fm.json").write_text('{"train_size": 60000, "val": [0]}')
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=[str(task), "digits"], protocols=["knn"]))
    summary = run_suite(suite, results=RecordStore(tmp_path / "res"), executor="local")
    assert summary.ok == 1 and len(summary.failed) == 1
    label, error = summary.failed[0]
    assert "fm-elsewhere" in label and "DatasetMissingError" in error and str(tmp_path / "empty") in error
    assert "apt-get install dataset-fashion-mnist" in error


def test_table__rerenders_mean_and_std_over_seeds(tmp_path, capsys):
    stochastic = tmp_path / "knn-stochastic.yaml"  # a protocol whose number depends on the seed
    stochastic.write_text((REPO / "protocols" / "knn.yaml").read_text().replace("stochastic: false", "stochastic: true")
                          .replace("name: knn", "name: knn-s"))
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"],
                                   protocols=[{"name": str(stochastic), "params": {"settings": [{"k": 5, "T": 0.07}]}}],
                                   seeds=[0, 1]))
    store = RecordStore(tmp_path / "res")
    run_suite(suite, results=store, executor="local")
    # make the two seeds differ so the spread is visible, as real seeds would
    recs = list(store.records())
    assert sorted(r.seed for r in recs) == [0, 1]
    for r, value in zip(recs, (0.90, 0.80)):
        store.write(replace(r, metrics={"top1_k5_T0.07": value}))
    capsys.readouterr()
    assert main(["table", "--results", str(tmp_path / "res"), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert 'random (random init),"85.0 ± 7.1 [' in csv, csv  # mean 0.85, sample std 0.0707; its interval
    assert main(["table", "--results", str(tmp_path / "res"), "--format", "latex"]) == 0
    assert "\\toprule" in capsys.readouterr().out


def test_cli__list_names_registered_things(capsys):
    assert main(["list", "protocols"]) == 0
    out = capsys.readouterr().out
    assert "knn" in out and "linear" in out
    assert main(["list", "encoders"]) == 0
    assert "builtin:small-cnn" in capsys.readouterr().out


def test_cli__unknown_protocol_stops_before_running(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"], protocols=["knnn"])
    assert main(["run", str(suite), "--results", str(tmp_path / "res")]) == 2
    assert ("unknown protocol 'knnn'; known: diagnostics, fewshot, finetune_100pct, invariance, knn, linear, rotation, "
            "semisup_10pct, semisup_1pct") in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_table_and_run__a_damaged_record_is_reported_skipped_and_evaluated_again(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"], protocols=["knn"])
    results = tmp_path / "res"
    assert main(["run", str(suite), "--results", str(results), "--executor", "local"]) == 0
    (path,) = (results / "records").glob("*.json")
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # truncated, e.g. by a full disk
    capsys.readouterr()
    assert main(["table", "--results", str(results)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {path}: not a valid record" in captured.err and "(no ok records match)" in captured.out
    assert main(["run", str(suite), "--results", str(results), "--executor", "local"]) == 0
    assert "1 ran ok, 0 already stored" in capsys.readouterr().err
    assert json.loads(path.read_text())["status"] == "ok"
