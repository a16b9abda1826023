"""load_results: one row per record (ok and failed), every column documented, invalid files reported as
`evalbench table` reports them; leaderboard_csv: the agreed columns, the same bytes every time."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import evalbench
from evalbench.core.errors import EvalbenchError
from evalbench.results import frame
from evalbench.results.frame import CSV_COLUMNS, leaderboard_csv, load_results, params_id
from tests.results.helpers import predicted, record, with_predictions, write_store

Y = np.arange(200) % 10
KNOBS = {"loss.temperature": 0.2, "batch_size": 64}


def _store(tmp_path):
    recs = [
        with_predictions(record("simclr", {}, details={"l2": 0.01},
                                meta={"pretrain": {"method": "simclr", "knobs": KNOBS, "task": "mnist5k"}}),
                         tmp_path, Y, {"top1": predicted(Y, 20)}),
        record("ft", {"top1": 0.7}, protocol="semisup", seed=0, params={"lr_grid": [0.1]}, details={"lr": 0.1},
               ci95={"top1": [0.6, 0.8]}),
        record("ft", {"top1": 0.8}, protocol="semisup", seed=1, params={"lr_grid": [0.1]}, details={"lr": 0.1}),
        record("shots", {"top1_centroid_5shot": 0.5}, protocol="fewshot", seed=0, params={},
               details={"l2": {"5": 1.0, "20": 10.0}}),
        record("broken", {}, status="error", error="probe failed: ValueError: x",
               details={"failed_stage": {"stage": "probe", "when": "running"}}),
    ]
    write_store(tmp_path, recs)
    return recs


def test_load_results__one_row_per_record_with_flat_columns(tmp_path):
    recs = _store(tmp_path)
    df = load_results(tmp_path)
    assert len(df) == len(recs) and set(df["key"]) == {r["key"] for r in recs}
    row = df.set_index("checkpoint").loc["simclr"]
    assert row["method"] == "simclr" and row["knob.loss.temperature"] == 0.2 and row["knob.batch_size"] == 64
    assert row["pretrained_on"] == "mnist5k" and row["chosen.l2"] == 0.01
    assert row["metric.top1"] == pytest.approx(0.9) and row["ci95_source.top1"] == "bootstrap"
    assert [row["ci95_lo.top1"], row["ci95_hi.top1"]] == recs[0]["details"]["ci95"]["top1"]
    assert row["protocol_id"] == "knn@1" and row["params"] == json.dumps({"k": 20}) and row["params_id"] == params_id({"k": 20})
    assert row["predictions"] == str((tmp_path / recs[0]["details"]["predictions"]["file"]).resolve())
    assert row["predictions_n"] == len(Y) and row["timing_s.probe"] == 0.5 and row["git"] == "c0ffee"
    assert pd.isna(row["seed"]) and row["status"] == "ok" and row["latest"]
    ft = df[df["checkpoint"] == "ft"].set_index("seed")
    assert ft["chosen.lr"].tolist() == [0.1, 0.1] and ft.loc[0, "ci95_source.top1"] == "probe"
    assert pd.isna(ft.loc[1, "ci95_lo.top1"]) and ft.loc[1, "metric.top1"] == 0.8
    shots = df.set_index("checkpoint").loc["shots"]
    assert (shots["chosen.l2.5"], shots["chosen.l2.20"]) == (1.0, 10.0)
    broken = df.set_index("checkpoint").loc["broken"]
    assert broken["status"] == "error" and broken["error"].startswith("probe failed") and not broken["latest"]
    assert broken["failed_stage"] == "probe" and pd.isna(broken["metric.top1"])


def test_load_results__every_column_is_documented_in_the_module_docstring(tmp_path):
    _store(tmp_path)
    doc = frame.__doc__
    for col in load_results(tmp_path).columns:
        name = col.split(".", 1)[0] + ".<" if "." in col else col  # knob.<name>, metric.<name>, ...
        assert f"``{name}" in doc, f"column {col!r} is not documented in evalbench/results/frame.py"


def test_load_results__the_newest_record_of_a_seed_is_the_latest(tmp_path):
    old = record("a", {"top1": 0.5}, created="2026-01-01T00:00:00+00:00")
    new = record("a", {"top1": 0.7}, created="2026-02-01T00:00:00+00:00")
    write_store(tmp_path, [new, old])
    df = load_results(tmp_path)
    assert df.loc[df["latest"], "metric.top1"].tolist() == [0.7] and len(df) == 2


def test_load_results__invalid_files_are_reported_like_table_does(tmp_path, capsys):
    from evalbench.cli import main

    _store(tmp_path)
    (tmp_path / "records" / "bad.json").write_text("{not json")
    lines: list[str] = []
    df = load_results(tmp_path, report=lines.append)
    assert len(df) == 5 and list(df.attrs["problems"]) == [str(tmp_path / "records" / "bad.json")]
    assert main(["table", "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().err.splitlines() == lines and "bad.json: not a valid record (JSONDecodeError" in lines[0]


def test_load_results__a_directory_without_records_is_an_error(tmp_path):
    with pytest.raises(EvalbenchError, match="no records under"):
        load_results(tmp_path / "nowhere")


def test_import_evalbench_stays_light_and_exports_load_results():
    code = "import sys, evalbench; assert 'pandas' not in sys.modules and 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
    assert evalbench.load_results is load_results


def test_leaderboard_csv__agreed_columns_cells_over_seeds_and_stable_bytes(tmp_path):
    _store(tmp_path)
    text = leaderboard_csv(load_results(tmp_path))
    assert text == leaderboard_csv(load_results(tmp_path)) and "\r" not in text
    df = pd.read_csv(io.StringIO(text), dtype={"params_id": str})
    assert list(df.columns) == CSV_COLUMNS
    ft = df[df["checkpoint"] == "ft"].iloc[0]
    assert (ft["protocol"], ft["metric"], ft["value"], ft["n"]) == ("semisup@1", "top1", 0.75, 2)
    assert "broken" not in set(df["checkpoint"])  # a failed record is no cell
    assert all(re.fullmatch(r"\d+\.\d{6}", v) for v in text.splitlines()[1].split(",")[5:7])
    rows = text.splitlines()[1:]
    assert rows == sorted(rows, key=lambda r: r.split(",")[:5])


def test_load_results__damaged_optional_parts_are_left_out_not_fatal(tmp_path):
    rec = record("a", {"top1": 0.9}, details={"ci95": {"top1": ["x", 1]}, "predictions": [1], "failed_stage": "probe",
                                              "features": {"load": {"skipped": [3]}}, "l2": {"5": "big"}})
    rec["timing_s"] = {"probe": "slow"}
    write_store(tmp_path, [rec])
    row = load_results(tmp_path).iloc[0]
    assert row["metric.top1"] == 0.9 and row["predictions"] is None and row["failed_stage"] is None
    assert not any(c.startswith(("ci95_", "chosen.", "timing_s.")) for c in row.index)
    from evalbench.results.tables import render_table
    assert "90.0" in render_table([rec], fmt="csv")
