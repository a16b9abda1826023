"""The README's main command: the embedded default run (slow: trains the reference, ~1-3 min)."""
from __future__ import annotations

import json

import pytest

from evalbench.cli import main


@pytest.mark.slow
def test_default_run__supervised_reference_beats_random_init(tmp_path, ray_session, capsys):
    assert main(["run", "--results", str(tmp_path)]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    top1 = {(r["checkpoint"]["random_init"], r["task"]["name"], r["protocol"]["name"], m): v
            for r in records for m, v in r["metrics"].items()}
    for task in ("digits", "mnist5k"):
        for proto, metric in (("knn", "top1_k20_T0.07"), ("linear", "top1")):
            assert top1[(False, task, proto, metric)] > top1[(True, task, proto, metric)], (task, proto)
    assert top1[(False, "mnist5k", "knn", "top1_k20_T0.07")] - top1[(True, "mnist5k", "knn", "top1_k20_T0.07")] > 0.1
    out = capsys.readouterr().out
    assert "small-cnn (random init)" in out and "small-cnn supervised" in out
    # running again finds everything stored, trains nothing and runs nothing
    assert main(["run", "--results", str(tmp_path)]) == 0
    assert "0 ran ok" in capsys.readouterr().err
