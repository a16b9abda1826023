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
    for task, proto, metric in (("digits", "knn", "top1_k20_T0.07"), ("mnist5k", "knn", "top1_k20_T0.07"),
                                ("mnist5k", "linear", "top1")):
        assert top1[(False, task, proto, metric)] > top1[(True, task, proto, metric)], (task, proto)
    # digits' linear probe is saturated (both about 98.6% of 359 test digits): the reference must not be worse
    assert top1[(False, "digits", "linear", "top1")] >= top1[(True, "digits", "linear", "top1")]
    assert top1[(False, "mnist5k", "knn", "top1_k20_T0.07")] - top1[(True, "mnist5k", "knn", "top1_k20_T0.07")] > 0.1
    out = capsys.readouterr().out
    assert "small-cnn (random init)" in out and "small-cnn supervised" in out
    # running again finds everything stored, trains nothing and runs nothing
    assert main(["run", "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "0 to run in 0 stages" in err and "0 ran ok" in err
