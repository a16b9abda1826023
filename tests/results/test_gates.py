"""Regression gates: `evalbench diff` catches a moved and a missing cell and passes within the tolerance;
`evalbench check-targets` catches a regression and a target without a cell; bad input exits 2."""
from __future__ import annotations

import numpy as np
import pytest

from evalbench.cli import main
from evalbench.core.errors import EvalbenchError
from evalbench.results.frame import leaderboard_csv, load_results
from evalbench.results.gates import GateInputError, diff_cells, load_cells, load_targets
from tests.results.helpers import predicted, record, with_predictions, write_store

Y = np.arange(400) % 10


def _store(root, *, a_wrong=40, with_c=True, extra=False):
    recs = [with_predictions(record("a", {}), root, Y, {"top1": predicted(Y, a_wrong)}),
            with_predictions(record("b", {}), root, Y, {"top1": predicted(Y, 60)}),
            record("b", {"collapse_std": 0.5}, protocol="diagnostics", params={})]
    if with_c:
        recs.append(record("c", {"top1": 0.5}, seed=0, protocol="semisup", params={}))
    if extra:
        recs.append(record("d", {"top1": 0.4}))
    write_store(root, recs)
    return root


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_diff__identical_stores_pass(tmp_path, capsys):
    rc, out, _ = _run(capsys, "diff", str(_store(tmp_path / "old")), str(_store(tmp_path / "new")))
    assert rc == 0 and out.startswith("ok: 4 cells before, 4 after; 4 within 0.5")


def test_diff__a_moved_cell_fails_and_is_listed_with_its_move(tmp_path, capsys):
    old, new = _store(tmp_path / "old"), _store(tmp_path / "new", a_wrong=44)  # a: 90.0 -> 89.0
    rc, out, _ = _run(capsys, "diff", str(old), str(new))
    moved = [line.split() for line in out.splitlines() if line.endswith("moved")]
    assert rc == 1 and moved == [["a", "digits", "knn@1", moved[0][3], "top1", "90.00", "89.00", "-1.00", "moved"]]
    assert "FAILED" in out and "1 moved, 0 missing, 0 new" in out


def test_diff__a_move_within_the_tolerance_passes(tmp_path, capsys):
    old, new = _store(tmp_path / "old"), _store(tmp_path / "new", a_wrong=42)  # 0.5 pp
    assert _run(capsys, "diff", str(old), str(new))[0] == 0
    assert _run(capsys, "diff", str(old), str(new), "--tol", "0.4")[0] == 1
    cells = diff_cells(load_cells(old), load_cells(new), tol=0.5).rows.set_index("checkpoint")
    assert cells.loc["a", "delta"] == pytest.approx(-0.5) and cells.loc["a", "status"] == "same"


def test_diff__a_missing_cell_fails_and_a_new_cell_passes(tmp_path, capsys):
    old = _store(tmp_path / "old")
    rc, out, _ = _run(capsys, "diff", str(old), str(_store(tmp_path / "new", with_c=False)))
    assert rc == 1 and any(line.startswith("c ") and line.endswith("missing") for line in out.splitlines())
    rc, out, _ = _run(capsys, "diff", str(old), str(_store(tmp_path / "more", extra=True)))
    assert rc == 0 and any(line.startswith("d ") and line.endswith("new") for line in out.splitlines())


def test_diff__a_store_against_its_committed_leaderboard_csv(tmp_path, capsys):
    old = _store(tmp_path / "old")
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "leaderboard.csv").write_text(leaderboard_csv(load_results(old)))
    assert _run(capsys, "diff", str(tmp_path / "board"), str(old))[0] == 0
    rc, out, _ = _run(capsys, "diff", str(tmp_path / "board" / "leaderboard.csv"),
                      str(_store(tmp_path / "new", a_wrong=60)))
    assert rc == 1 and "-5.00" in out


def _targets(path, body):
    path.write_text(body)
    return str(path)


TARGETS = """targets:
  - {checkpoint: a, task: digits, protocol: knn@1, metric: top1, minimum: 90.0, tolerance: 0.5}
  - {checkpoint: c, task: digits, protocol: semisup, metric: top1, minimum: 45}
"""


def test_check_targets__passes_then_catches_a_regression(tmp_path, capsys):
    targets = _targets(tmp_path / "t.yaml", TARGETS)
    rc, out, _ = _run(capsys, "check-targets", targets, "--results", str(_store(tmp_path / "ok")))
    assert rc == 0 and out.startswith("ok: 2 targets")
    rc, out, _ = _run(capsys, "check-targets", targets, "--results", str(_store(tmp_path / "worse", a_wrong=44)))
    below = [line.split() for line in out.splitlines() if line.endswith("below")]
    assert rc == 1 and below and below[0][0] == "a" and below[0][-3:] == ["89.00", "-0.50", "below"]


def test_check_targets__a_target_without_a_cell_fails_csv_targets_too(tmp_path, capsys):
    targets = _targets(tmp_path / "t.csv", "checkpoint,task,protocol,metric,minimum,tolerance\n"
                                          "a,digits,knn,top1,80,\nzzz,digits,knn,top1,10,1\n")
    rc, out, _ = _run(capsys, "check-targets", targets, "--results", str(_store(tmp_path / "r")))
    assert rc == 1 and any(line.startswith("zzz") and line.endswith("missing") for line in out.splitlines())
    assert "1 without a cell" in out


@pytest.mark.parametrize("body,message", [
    ("targets:\n  - {checkpoint: a, task: digits, protocol: knn, metric: top1}\n", "minimum"),
    ("targets:\n  - {checkpoint: a, task: digits, protocol: knn, metric: top1, minimum: 90, tolrance: 1}\n", "tolrance"),
    ("targets: [\n", "malformed YAML"),
    ("targets:\n  - {checkpoint: a, task: digits, protocol: knn, metric: top1, minimum: 0.9e3}\n", "0..100"),
])
def test_check_targets__a_malformed_targets_file_is_a_clear_error(tmp_path, capsys, body, message):
    targets = _targets(tmp_path / "t.yaml", body)
    with pytest.raises(EvalbenchError, match=message):
        load_targets(tmp_path / "t.yaml")
    rc, _, err = _run(capsys, "check-targets", targets, "--results", str(_store(tmp_path / "r")))
    assert rc == 2 and err.startswith("evalbench: error: ") and str(tmp_path / "t.yaml") in err


def test_gates__bad_paths_and_files_exit_2_with_what_to_pass(tmp_path, capsys):
    rc, _, err = _run(capsys, "diff", str(tmp_path / "missing"), str(_store(tmp_path / "r")))
    assert rc == 2 and "no such file or directory; pass a results directory" in err
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    with pytest.raises(GateInputError, match="column\\(s\\) checkpoint, task"):
        load_cells(tmp_path / "other.csv")
    (tmp_path / "bad.csv").write_text("checkpoint,task,protocol,params_id,metric,value,lo,hi,n\na,t,p@1,x,top1,high,,,1\n")
    with pytest.raises(GateInputError, match="line 2: column 'value' is 'high', not a number"):
        load_cells(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "diff", str(tmp_path / "empty"), str(tmp_path / "r"))
    assert rc == 2 and "without records/ or leaderboard.csv" in err
    assert _run(capsys, "check-targets", str(tmp_path / "none.yaml"), "--results", str(tmp_path / "r"))[0] == 2
    assert _run(capsys, "diff", str(tmp_path / "r"), str(tmp_path / "r"), "--tol", "-1")[0] == 2
