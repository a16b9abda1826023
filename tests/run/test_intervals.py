"""End to end: every probe record carries its 95% interval and its per-example test predictions
(artifacts/predictions/<key>.npz, in the test split's order), and the table shows the interval."""
from __future__ import annotations

import numpy as np

from evalbench.results.predictions import load_predictions
from evalbench.results.store import RecordStore
from evalbench.results.tables import render_table
from evalbench.run.runner import run_suite
from evalbench.specs.suite import load_suite
from tests.conftest import PREP, write_suite

RANDOM = {"name": "random", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}


def test_run__records_carry_intervals_and_paired_predictions(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM, {**RANDOM, "name": "r2", "init_seed": 1}],
                                   tasks=["digits"], protocols=["knn"]))
    store = RecordStore(tmp_path / "res")
    assert run_suite(suite, results=store, executor="local").ok == 2
    recs = list(store.records())
    preds = []
    for r in recs:
        ci = r.details["ci95"]
        assert set(ci) == set(r.metrics)
        assert all(lo <= r.metrics[m] <= hi and hi - lo < 0.1 for m, (lo, hi) in ci.items())
        assert r.details["predictions"]["file"] == f"artifacts/predictions/{r.key}.npz"
        p = load_predictions(tmp_path / "res" / r.details["predictions"]["file"])
        assert all(abs(float((p.y_pred[m] == p.y_true).mean()) - r.metrics[m]) < 1e-6 for m in r.metrics)
        preds.append(p)
    assert np.array_equal(preds[0].y_true, preds[1].y_true)  # the same test examples, in the same order: pairable
    assert "[" in render_table(recs, fmt="github").splitlines()[2]
