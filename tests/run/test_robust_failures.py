"""Issue 11, defect 6: a failed evaluation's record names the stage that failed (training,
extraction, probe), says why in one plain line without terminal codes, and the retries Ray used;
the summary groups failures by cause."""
from __future__ import annotations

import os
from dataclasses import replace
from functools import partial

import evalbench.run.runner as runner
from evalbench.results.store import RecordStore
from evalbench.run.runner import format_summary, run_suite
from evalbench.run.stages import StageOutput
from evalbench.specs.suite import load_suite
from tests.conftest import PREP, write_suite

RANDOM = {"name": "r", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}


class DiesWhenUnpickled:
    """A stage input that kills the worker process receiving it: a crash Ray sees as a dead worker."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_defect6__a_crashed_extraction_is_named_with_its_retries_in_plain_text(tmp_path, ray_session, monkeypatch):
    plan_suite = runner.plan_suite

    def poisoned(suite, **kwargs):
        plan = plan_suite(suite, **kwargs)
        for identity, stage in plan.stages.items():
            if stage.kind == "extract":
                plan.stages[identity] = replace(stage, inputs={**stage.inputs, "crash": DiesWhenUnpickled()})
        return plan

    monkeypatch.setattr(runner, "plan_suite", poisoned)
    monkeypatch.setattr(runner, "ExecOptions", partial(runner.ExecOptions, max_retries=1))  # 2 crashes, not 4
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"], protocols=["knn", "linear"]))
    store = RecordStore(tmp_path / "res")
    summary = run_suite(suite, results=store, executor="ray")
    records = list(store.records())
    assert len(records) == 2 and summary.ok == 0 and len(summary.failed) == 2
    for r in records:
        assert r.status == "error" and r.metrics == {}
        assert r.error.startswith("extraction failed: the Ray worker running it died (WorkerCrashedError")
        assert "and Ray's 1 retry of it is used up" in r.error
        assert "\x1b" not in r.error and "\n" not in r.error
        assert r.details["failed_stage"] == {"stage": "extraction", "label": "r | digits | features[identity]",
                                             "when": "running", "retries": 1}
    text = format_summary(summary)
    assert "failures by cause (1):" in text and "[2 evaluations]" in text  # one cause, both probes below it


def test_defect6__a_failing_probe_names_the_probe(tmp_path):
    """diagnostics on a 2-row subsample of different labels cannot measure alignment: a probe failure."""
    diag = {"name": "diagnostics", "params": {"max_samples": 2}}
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"], protocols=[diag, "knn"]))
    store = RecordStore(tmp_path / "res")
    summary = run_suite(suite, results=store, executor="local")
    assert summary.ok == 1 and len(summary.failed) == 1
    (bad,) = [r for r in store.records() if not r.ok]
    assert bad.error.startswith("probe failed: EvalbenchError: diagnostics: no two sampled features share a label")
    assert bad.details["failed_stage"]["stage"] == "probe" and bad.details["failed_stage"]["retries"] == 0


def test_defect6__planning_failures_are_grouped_by_cause(tmp_path):
    gone = {"name": "gone", "arch": "builtin:small-cnn", "path": str(tmp_path / "gone.pt"), "preprocessing": PREP}
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=[gone], tasks=["digits", "mnist5k"],
                                   protocols=["knn", {"name": "linear", "params": {"l2_grid": [1e-3], "max_iter": 20}}]))
    summary = run_suite(suite, results=RecordStore(tmp_path / "res"), executor="local")
    text = format_summary(summary)
    assert "4 failed" in text and "failures by cause (1):" in text and "[4 evaluations]" in text, text
    assert text.count("FAILED gone |") == 4
    assert "extraction failed while planning (nothing ran): CheckpointError: checkpoint 'gone'" in text


def test_defect6__a_non_finite_metric_is_a_failed_probe_not_an_ok_record():
    out = StageOutput("k", "ok", metrics={"top1": float("nan")})
    checked = runner._finite_metrics(out)
    assert not checked.ok and checked.error == "probe failed: metric 'top1' is nan, not a finite number"
    assert runner._json_safe({"a": [float("inf"), 1.0]}) == {"a": ["inf", 1.0]}


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_defect6__unusable_checkpoints_are_named_for_what_they_are(tmp_path, saved_small_cnn):
    import torch

    data = saved_small_cnn.read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "truncated.pt").write_bytes(data[:2000])
    (tmp_path / "a-directory.pt").mkdir()
    torch.save({"state_dict": torch.load(saved_small_cnn), "evil": RunsCode()}, tmp_path / "pickled.pt")
    ckpts = [{"name": n, "arch": "builtin:small-cnn", "path": str(tmp_path / f"{n}.pt"), "preprocessing": PREP}
             for n in ("empty", "truncated", "a-directory", "pickled")]
    suite = load_suite(write_suite(tmp_path / "s.yaml", checkpoints=ckpts, tasks=["digits"], protocols=["knn"]))
    store = RecordStore(tmp_path / "res")
    run_suite(suite, results=store, executor="local")
    error = {r.checkpoint["name"]: r.error for r in store.records()}
    assert error["empty"].startswith("extraction failed: CheckpointError: checkpoint file ") and \
        "is empty (0 bytes)" in error["empty"]  # was "(EOFError: ; ...)"
    # torch's own sentence ends where it ends, and what is left out is counted (was cut mid-sentence)
    assert "your checkpoint file is corrupted. [" in error["truncated"] and "more characters not shown]" in error["truncated"]
    assert "is a directory, not a checkpoint file" in error["a-directory"]  # was "does not exist"
    assert error["a-directory"].startswith("extraction failed while planning (nothing ran): ")
    assert "it pickles a posix.system object, which weights-only loading refuses" in error["pickled"]
