"""Tables from records: newest ok record wins, errors never enter a cell, params variants split columns."""
from __future__ import annotations

from evalbench.results.tables import records_frame, render_table, summary_frame


def _rec(name, value, *, seed=0, created="2026-01-01T00:00:00+00:00", status="ok", params=None, random_init=False):
    return {"checkpoint": {"name": name, "random_init": random_init}, "task": {"name": "digits", "version": 1},
            "protocol": {"name": "knn", "version": 1, "params": params or {"k": 20}}, "seed": seed,
            "status": status, "metrics": {"top1": value} if status == "ok" else {}, "created": created}


def test_table__newest_record_of_a_job_wins():
    recs = [_rec("a", 0.5, created="2026-01-01T00:00:00+00:00"), _rec("a", 0.7, created="2026-02-01T00:00:00+00:00")]
    summary = summary_frame(records_frame(recs))
    assert summary["mean"].tolist() == [0.7] and summary["count"].tolist() == [1]


def test_table__error_records_never_become_numbers():
    csv = render_table([_rec("a", 0.9), _rec("b", None, status="error")], fmt="csv")
    assert "a,90.0" in csv and "b," not in csv


def test_table__two_param_sets_of_one_protocol_get_two_columns():
    csv = render_table([_rec("a", 0.9, params={"k": 20}), _rec("a", 0.8, params={"k": 5})], fmt="csv")
    header = csv.splitlines()[0].split(",")
    assert len(header) == 3 and all(h.startswith("digits / knn@1#") for h in header[1:])


def test_table__random_init_rows_are_labelled():
    assert "a (random init)" in render_table([_rec("a", 0.9, random_init=True)], fmt="github")
