"""The README's main command: the embedded default run (slow: trains the reference, ~1-3 min)."""
from __future__ import annotations

import json

import pytest

from evalbench.cli import main


@pytest.mark.slow
def test_default_run__pretrained_rows_against_random_init(tmp_path, ray_session, capsys):
    assert main(["run", "--results", str(tmp_path)]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    top1 = {((r["checkpoint"]["meta"].get("pretrain") or {}).get("method", "random"), r["task"]["name"],
             r["protocol"]["name"], m): v for r in records for m, v in r["metrics"].items()}
    knn = "top1_k20_T0.07"
    for task in ("digits", "mnist5k"):  # SimCLR and BYOL, trained briefly on mnist5k, beat random init on k-NN
        for method in ("simclr", "byol"):
            assert top1[(method, task, "knn", knn)] > top1[("random", task, "knn", knn)], (method, task)
    assert top1[("supervised", "mnist5k", "knn", knn)] - top1[("random", "mnist5k", "knn", knn)] > 0.1
    assert top1[("supervised", "mnist5k", "linear", "top1")] > top1[("random", "mnist5k", "linear", "top1")]
    for method in ("random", "supervised", "simclr", "byol"):
        assert top1[(method, "mnist5k", "diagnostics", "collapsed")] == 0.0, method
    out = capsys.readouterr().out
    assert "small-cnn (random init)" in out and "small-cnn simclr" in out and "small-cnn byol" in out
    # running again finds everything stored, trains nothing and runs nothing
    assert main(["run", "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "0 to run in 0 stages" in err and "0 ran ok" in err
