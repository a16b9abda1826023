"""The `train` stage kind (fine-tuning protocols): planned instead of extract + probe, on the
checkpoint's weights (its pretrain stage for evalbench-pretrained ones), one record per draw (= seed)
with a bootstrap interval and stored test predictions; mean ± std over draws in the table; and the
transfer table over the records it wrote."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalbench.cli import main
from evalbench.core.errors import EvalbenchError
from evalbench.pretrain.config import parse_pretrain_config
from evalbench.results.store import RecordStore
from evalbench.results.tables import render_table
from evalbench.results.transfer import render_transfer, transfer_matrix
from evalbench.run.plan import plan_suite
from evalbench.run.runner import run_suite
from evalbench.specs.checkpoint import CheckpointSpec, StageWeights, parse_data_config
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.suite import load_suite
from tests.conftest import PREP, write_suite

RANDOM = {"name": "random", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}
TINY_1PCT = {"name": "semisup_1pct", "params": {"epochs": 2, "min_steps": 0, "lr_grid": [0.01, 0.1]}}
TINY_100PCT = {"name": "finetune_100pct", "params": {"epochs": 1, "min_steps": 0, "lr_grid": [0.1]}}


def _pretrained() -> CheckpointSpec:
    cfg = parse_pretrain_config({"method": "simclr", "arch": "builtin:small-cnn", "preprocessing": PREP,
                                 "task": "digits", "seed": 0, "epochs": 1, "batch_size": 64}, where="test")
    return CheckpointSpec(name="simclr", arch=cfg.arch, data=cfg.data, weights=StageWeights("pretrain", {"config": cfg}),
                          meta={"pretrain": {"method": "simclr", "task": "digits"}})


def test_plan__a_finetuning_protocol_plans_train_stages_on_the_weights(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"],
                                   protocols=["knn", TINY_1PCT], seeds=[0, 1]))
    suite = type(suite)(suite.name, (*suite.checkpoints, _pretrained()), suite.tasks, suite.protocols, suite.seeds)
    plan = plan_suite(suite)
    kinds = [s.kind for s in plan.stages.values()]
    assert kinds.count("train") == 2 * 2 and kinds.count("probe") == 2 and kinds.count("pretrain") == 1
    assert kinds.count("extract") == 2  # for knn only: fine-tuning reads no features
    pre = next(s for s in plan.stages.values() if s.kind == "pretrain")
    trains = [s for s in plan.stages.values() if s.kind == "train"]
    assert {s.deps for s in trains} == {(), (pre.identity,)}
    assert len({s.identity for s in trains}) == 4 and not any(s.error for s in trains)
    assert {s.inputs["seed"] for s in trains} == {0, 1}


def test_plan__a_seed_without_a_stored_draw_is_recorded_as_a_planning_error(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"],
                                   protocols=[TINY_1PCT], seeds=[3]))
    (stage,) = plan_suite(suite).records()
    assert stage.kind == "train" and "draw 3" in stage.error


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]


def test_run__train_records_intervals_draws_and_transfer(tmp_path, capsys):
    ckpts = [{**RANDOM, "pretrained_on": "mnist5k"}, {**RANDOM, "name": "random-b", "init_seed": 1}]
    path = write_suite(tmp_path / "s.yaml", checkpoints=ckpts, tasks=["digits"],
                       protocols=[TINY_1PCT, TINY_100PCT, "knn"], seeds=[0, 1])
    store = RecordStore(tmp_path / "res")
    summary = run_suite(load_suite(path), results=store, executor="local")
    assert summary.ok == 2 * (2 + 2 + 1) and summary.stages_run["train"] == 8
    records = _records(tmp_path / "res")
    trains = [r for r in records if r["protocol"]["implementation"] == "finetune"]
    for r in trains:
        assert r["status"] == "ok" and r["seed"] in (0, 1) and r["features"] is None
        assert "features" not in r["details"] and r["details"]["load"]["random_init"] is True
        lo, hi = r["details"]["ci95"]["top1"]
        assert lo <= r["metrics"]["top1"] <= hi
        assert (tmp_path / "res" / r["details"]["predictions"]["file"]).is_file()
        assert r["details"]["lr"] in r["protocol"]["params"]["lr_grid"]
        sub = r["details"]["subset"]
        assert sub["draw"] == r["seed"]
        assert sub["n"] == (10 if r["protocol"]["name"] == "semisup_1pct" else 1258)
    one = {r["seed"]: r["details"]["subset"] for r in trains if r["protocol"]["name"] == "semisup_1pct"}
    assert one[0]["source"] == "file" and one[0]["min_one_per_class"] is False
    table = render_table(records)
    version = next(r["protocol"]["version"] for r in trains if r["protocol"]["name"] == "semisup_1pct")
    assert version == resolve_protocol("semisup_1pct").version
    assert f"digits<br>semisup_1pct@{version} top1" in table and "±" in table  # mean ± std over the draws
    again = run_suite(load_suite(path), results=store, executor="local")
    assert again.stages_run == {} and again.skipped == summary.ok

    # transfer: the checkpoint entry names its pretraining task; the other names none and is left out
    wide = transfer_matrix(records)
    assert set(wide.index.get_level_values("source")) == {"mnist5k"}
    assert {p.split()[0] for p in wide.index.get_level_values("protocol")} == {"knn", "semisup_1pct",
                                                                             "finetune_100pct"}
    text = render_transfer(records)
    assert "mnist5k → random / semisup_1pct top1" in text and "digits" in text
    capsys.readouterr()
    assert main(["table", "--transfer", "--results", str(tmp_path / "res")]) == 0
    assert "mnist5k →" in capsys.readouterr().out
    with pytest.raises(EvalbenchError, match="no checkpoint was pretrained on it"):
        render_transfer(records, source="fashion-mnist")
    assert main(["table", "--transfer", "--source", "fashion-mnist", "--results", str(tmp_path / "res")]) == 2
    assert "fashion-mnist" in capsys.readouterr().err
