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
    header, row_a = csv.splitlines()[0].split(","), next(l for l in csv.splitlines() if l.startswith("a ")).split(",")
    cell = dict(zip(header, row_a))
    assert row_a[0] == "a [COLLAPSED on digits]" and cell["digits / diagnostics@1 collapse_std"] == "0.0123"
    assert [h for h in header if "@" in h][-1] == "digits / diagnostics@1 collapse_std"  # accuracies first, diagnostics last
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


# ---------------------------------------------------------------- formats, best and ties (issue 9)

def _ranked(tmp_path):
    """digits: knn (two settings) and linear for a (best), b (tied: 4 discordant examples, McNemar p = 0.125)
    and c (significantly behind); mnist5k: linear for a only (a column of one: no marks)."""
    import numpy as np

    from tests.results.helpers import predicted, record, with_predictions

    y = np.arange(400) % 10
    recs = []
    for name, wrong in (("a", 40), ("b", 44), ("c", 100)):
        recs.append(with_predictions(record(name, {}), tmp_path, y, {"top1_k20_T0.07": predicted(y, wrong),
                                                                      "top1_k200_T0.1": predicted(y, wrong + 2)}))
        recs.append(with_predictions(record(name, {}, protocol="linear", version=2, params={}), tmp_path, y,
                                     {"top1": predicted(y, wrong)}))
    recs.append(with_predictions(record("a", {}, protocol="linear", version=2, params={}, task="mnist5k"), tmp_path, y,
                                 {"top1": predicted(y, 10)}))
    return recs


def test_table__latex_is_booktabs_with_task_groups_best_bold_ties_marked_and_small_intervals(tmp_path):
    tex = render_table(_ranked(tmp_path), fmt="latex", storage=tmp_path)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{lrrrr}" and lines[1] == r"\toprule"
    assert lines[2] == r" & \multicolumn{3}{c}{digits} & \multicolumn{1}{c}{mnist5k} \\"
    assert lines[3] == r"\cmidrule(lr){2-4} \cmidrule(lr){5-5}"
    assert lines[4] == r"checkpoint (top-1 \%) & knn@1 k20 T0.07 & knn@1 k200 T0.1 & linear@2 top1 & linear@2 top1 \\"
    rows = {line.split(" & ")[0]: line.split(" & ")[1:] for line in lines[6:9]}
    assert rows["a"][0].startswith(r"\textbf{90.0} {\scriptsize [") and rows["a"][3].startswith("97.5 {")  # alone
    assert rows["b"][0].startswith(r"89.0$^\dagger$ {\scriptsize [")
    assert rows["c"][0].startswith(r"75.0 {\scriptsize [") and rows["c"][3] == r"-- \\"
    assert r"\bottomrule" in lines and lines[-1].startswith("% ")


def test_table__every_format_has_the_task_above_protocol_and_setting(tmp_path):
    recs = _ranked(tmp_path)
    gh = render_table(recs, fmt="github", storage=tmp_path).splitlines()
    assert gh[0].split("|")[2].strip() == "digits<br>knn@1 k20 T0.07"
    assert "**90.0** [" in gh[2] and "89.0† [" in gh[3] and "75.0 [" in gh[4] and "†" not in gh[4]
    plain = render_table(recs, fmt="plain", storage=tmp_path).splitlines()
    assert plain[0].split() == ["digits", "mnist5k"] and plain[1].split()[:4] == ["checkpoint", "(top-1", "%)", "knn@1"]
    assert "90.0* [" in plain[3] and "89.0† [" in plain[4]
    page = render_table(recs, fmt="html", storage=tmp_path)
    assert '<th colspan="3">digits</th><th colspan="1">mnist5k</th>' in page and "<b>90.0</b> <small>[" in page
    csv = render_table(recs, fmt="csv", storage=tmp_path).splitlines()
    assert csv[0] == ("checkpoint,digits / knn@1 k20 T0.07,digits / knn@1 k200 T0.1,digits / linear@2 top1,"
                      "mnist5k / linear@2 top1")
    assert not any(mark in "\n".join(csv) for mark in ("†", "*", "<"))  # data: no marks, no legend


def test_table__ties_follow_the_intervals_without_predictions_and_say_nothing_without_them(tmp_path):
    recs = [_rec("a", 0.90), _rec("b", 0.89), _rec("c", 0.70)]
    recs[0]["details"] = {"ci95": {"top1": [0.87, 0.93]}}
    recs[1]["details"] = {"ci95": {"top1": [0.86, 0.92]}}
    recs[2]["details"] = {"ci95": {"top1": [0.66, 0.74]}}
    gh = render_table(recs, fmt="github").splitlines()
    assert "**90.0** [" in gh[2] and "89.0† [" in gh[3] and "†" not in gh[4]
    bare = render_table([_rec("a", 0.90), _rec("b", 0.89)], fmt="github").splitlines()
    assert "**90.0**" in bare[2] and "†" not in bare[3]  # no interval, no predictions: no tie claimed
