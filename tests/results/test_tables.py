"""Tables from records: newest ok record wins, errors never enter a cell, params variants split columns."""
from __future__ import annotations

import math

from evalbench.results.frame import records_to_frame
from evalbench.results.statistics import cell_stats
from evalbench.results.tables import render_table


def _rec(name, value, *, seed=0, created="2026-01-01T00:00:00+00:00", status="ok", params=None, random_init=False):
    return {"checkpoint": {"name": name, "random_init": random_init}, "task": {"name": "digits", "version": 1},
            "protocol": {"name": "knn", "version": 1, "params": params or {"k": 20}}, "seed": seed,
            "status": status, "metrics": {"top1": value} if status == "ok" else {}, "created": created}


def test_table__newest_record_of_a_job_wins():
    recs = [_rec("a", 0.5, created="2026-01-01T00:00:00+00:00"), _rec("a", 0.7, created="2026-02-01T00:00:00+00:00")]
    cells = cell_stats(records_to_frame(recs))
    assert cells["mean"].tolist() == [0.7] and cells["n"].tolist() == [1]
    assert "70.0" in render_table(recs, fmt="csv") and "50.0" not in render_table(recs, fmt="csv")


def test_table__error_records_never_become_numbers():
    csv = render_table([_rec("a", 0.9), _rec("b", None, status="error")], fmt="csv")
    assert "a,90.0" in csv and "b," not in csv


def test_table__two_param_sets_of_one_protocol_get_two_columns():
    csv = render_table([_rec("a", 0.9, params={"k": 20}), _rec("a", 0.8, params={"k": 5})], fmt="csv")
    header = csv.splitlines()[0].split(",")
    assert len(header) == 3 and all(h.startswith("digits / knn@1#") for h in header[1:])


def test_table__random_init_rows_are_labelled():
    assert "a (random init)" in render_table([_rec("a", 0.9, random_init=True)], fmt="github")


def _pre(name, method, knobs, value=0.9):
    r = _rec(name, value)
    r["checkpoint"]["meta"] = {"pretrain": {"method": method, "knobs": knobs}}
    return r


def test_table__pretraining_knobs_that_vary_within_a_method_become_columns():
    recs = [_pre("a", "simclr", {"loss.temperature": 0.1, "batch_size": 64}),
            _pre("b", "simclr", {"loss.temperature": 0.5, "batch_size": 64}),
            _pre("c", "byol", {"ema.momentum": 0.99, "batch_size": 64}), _rec("d", 0.5)]
    csv = render_table(recs, fmt="csv")
    header = csv.splitlines()[0].split(",")
    assert header[:3] == ["checkpoint", "method", "loss.temperature"] and "ema.momentum" not in header
    assert "a,simclr,0.1," in csv and "c,byol,–," in csv and "d,–,–," in csv


def test_table__collapsed_features_are_flagged_on_the_row_and_diagnostics_are_not_percent():
    diag = _rec("a", 0.0)
    diag["protocol"] = {"name": "diagnostics", "version": 1, "params": {}}
    diag["metrics"] = {"collapse_std": 0.01234, "collapsed": 1.0}
    csv = render_table([_rec("a", 0.9), diag, _rec("b", 0.8)], fmt="csv")
    assert "a [COLLAPSED on digits],0.0123,90.0" in csv
    assert "collapsed" not in csv.splitlines()[0] and csv.count("COLLAPSED") == 1


def test_table__a_single_runs_cell_shows_its_95_interval():
    r = _rec("a", 0.9)
    r["details"] = {"ci95": {"top1": [0.85, 0.94]}}
    assert "90.0 [85.0, 94.0]" in render_table([r], fmt="github")
    assert "[" not in render_table([r], fmt="github", ci=False).split("\n", 2)[2]
    two = render_table([r, {**_rec("a", 0.8, seed=1), "details": r["details"]}], fmt="csv")
    assert "90.0 [" not in two  # over seeds: not one run's interval, but the t-interval over the two seeds
    std = math.sqrt(((0.9 - 0.85) ** 2 + (0.8 - 0.85) ** 2) / 1)
    t_975_df1 = math.tan(math.pi * (0.975 - 0.5))  # Student t with 1 df is Cauchy: quantile tan(pi (p - 1/2))
    lo, hi = max(0.0, 0.85 - t_975_df1 * std / math.sqrt(2)), min(1.0, 0.85 + t_975_df1 * std / math.sqrt(2))
    assert f'a,"85.0 ± {100 * std:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"' in two  # CSV quotes the comma
