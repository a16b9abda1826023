"""Issue 11, crash test: `evalbench run` killed (SIGKILL) at random moments, again and again, then run
to the end: no record lost, none duplicated, none corrupt, and the final table equal to that of a run
that was never interrupted. A few kills in CI with the local executor; more, and through Ray with the
whole process group killed, under the slow marker. The kill moments come from a seeded generator
(printed), so a failure can be replayed."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalbench.results.store import RecordStore
from evalbench.results.tables import render_table
from tests.conftest import FAST_LINEAR, PREP, write_suite

REPO = Path(__file__).resolve().parents[2]
SEED = 20261125


def _suite(tmp_path: Path) -> Path:
    ckpts = [{"name": f"r{i}", "arch": "builtin:small-cnn", "init": "random", "init_seed": i, "preprocessing": PREP}
             for i in range(2)]
    return write_suite(tmp_path / "s.yaml", checkpoints=ckpts, tasks=["digits"], protocols=["knn", FAST_LINEAR])


def _files(results: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (results / "records").glob("*.json")}


def _check_store(results: Path, keys: set[str], before: dict[str, str]) -> dict[str, str]:
    """Every record file is a valid record of a planned key; no ok record of an earlier run changed or vanished."""
    files = _files(results)
    store = RecordStore(results)
    valid = {r.key: r for r in store.records()}
    assert not store.problems, store.problems  # none corrupt
    assert set(valid) == {name[:-5] for name in files} and set(valid) <= keys  # one file per key, only planned keys
    for name, text in before.items():
        if json.loads(text)["status"] == "ok":
            assert files.get(name) == text, f"{name} was lost or rewritten"  # none lost
    leftovers = [p.name for p in (results / "records").iterdir() if not p.name.endswith(".json")]
    assert all(n.startswith(".tmp-") and n.endswith(".part") for n in leftovers), leftovers  # a cut-short write only
    return files


def _killed_runs(tmp_path: Path, *, kills: int, executor: str, group: bool) -> None:
    suite_path = _suite(tmp_path)
    command = [sys.executable, "-m", "evalbench.cli", "run", str(suite_path), "--executor", executor]
    t0 = time.time()
    full = subprocess.run(command + ["--results", str(tmp_path / "baseline")], cwd=REPO, capture_output=True,
                          timeout=600)
    span = time.time() - t0  # the uninterrupted run, from start to end: kills land anywhere in such a run
    assert full.returncode == 0, full.stderr[-2000:]
    baseline = RecordStore(tmp_path / "baseline")
    keys = {r.key for r in baseline.records()}
    results = tmp_path / "killed"
    cmd = command + ["--results", str(results)]
    rng = random.Random(SEED)
    moments = [round(rng.uniform(0.1, 1.0) * span, 2) for _ in range(kills)]
    print(f"kill moments (seed {SEED}, an uninterrupted run takes {span:.1f} s): {moments}")
    files: dict[str, str] = {}
    for at in [None] + moments:  # None: the moment the first record is there (surely mid-run)
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=group)
        deadline = time.time() + (at if at is not None else 300)
        while proc.poll() is None and time.time() < deadline and (at is not None or not _files(results)):
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.send_signal(signal.SIGKILL)
        proc.wait()
        files = _check_store(results, keys, files)
    stored = sum(json.loads(text)["status"] == "ok" for text in files.values())
    final = subprocess.run(cmd + ["--format", "csv"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    # the resumed run computes exactly what no killed run stored
    assert f"{len(keys)} evaluations: {len(keys) - stored} ran ok, {stored} already stored, 0 failed" in final.stderr
    done = _check_store(results, keys, files)
    assert len(done) == len(keys)
    resumed = RecordStore(results)
    assert render_table(list(resumed.records()), fmt="csv") == render_table(list(baseline.records()), fmt="csv")
    assert {r.key: r.metrics for r in resumed.records()} == {r.key: r.metrics for r in baseline.records()}


def test_kill__random_kills_lose_duplicate_or_corrupt_no_record(tmp_path):
    _killed_runs(tmp_path, kills=2, executor="local", group=False)


@pytest.mark.slow
def test_kill__many_random_kills(tmp_path):
    _killed_runs(tmp_path, kills=12, executor="local", group=False)


@pytest.mark.slow
def test_kill__random_kills_of_a_ray_run_and_its_process_group(tmp_path):
    _killed_runs(tmp_path, kills=6, executor="ray", group=True)
