"""Issue 11, defects 4 and 5: what the whole run needs is checked before any work and before Ray
starts (results directory, artifact store, cluster address, option combinations), each failure one
paragraph with exit code 2; nothing to run (or a dry run) starts no Ray; jobs stay apart in the output."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

import evalbench.run.executors as executors
from evalbench.cli import main
from tests.conftest import PREP, write_suite

RANDOM = {"name": "r", "arch": "builtin:small-cnn", "init": "random", "preprocessing": PREP}


@pytest.fixture
def suite(tmp_path) -> Path:
    return write_suite(tmp_path / "suite.yaml", checkpoints=[RANDOM], tasks=["digits"], protocols=["knn"])


@pytest.fixture
def no_ray(monkeypatch):
    """Any attempt to start or join Ray fails the test."""
    def refuse(opts):
        raise AssertionError("Ray was started")
    monkeypatch.setattr(executors, "_init_ray", refuse)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error(capsys, args: list[str]) -> str:
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("evalbench: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("make, flag, expected", [
    (lambda t: (t / "file").write_text("x") and t / "file", "--results", "is a file, not a directory"),
    (lambda t: Path("/proc/evalbench-results"), "--results", "the directory cannot be made"),
    (lambda t: Path("/proc"), "--results", "cannot write in /proc"),
    (lambda t: (t / "file").write_text("x") and t / "file", "--storage", "is a file, not a directory"),
    (lambda t: (t / "file").write_text("x") and t / "file" / "sub", "--storage", "is a file, so the directory cannot be made"),
])
def test_defect4__unusable_results_or_storage_is_an_error_before_any_work(tmp_path, suite, capsys, no_ray, make, flag,
                                                                         expected):
    target = make(tmp_path)
    args = ["run", str(suite), "--executor", "local", flag, str(target)]
    if flag == "--storage":
        args += ["--results", str(tmp_path / "res")]
    line = _error(capsys, args)
    assert f"{flag} {target}" in line and expected in line, line
    assert not (tmp_path / "res" / "records").exists() and not list(tmp_path.rglob("features"))


def test_defect4__a_file_where_the_records_directory_goes_is_an_error(tmp_path, suite, capsys):
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "records").write_text("not a directory")
    line = _error(capsys, ["run", str(suite), "--executor", "local", "--results", str(tmp_path / "res")])
    assert f"{tmp_path / 'res' / 'records'} is a file" in line


def test_defect4__two_entries_of_one_protocol_stay_apart_in_the_output(tmp_path, capsys):
    knn = lambda k: {"name": "knn", "params": {"settings": [{"k": k, "T": 0.07}]}}  # noqa: E731
    suite = write_suite(tmp_path / "s.yaml", checkpoints=[RANDOM], tasks=["digits"], protocols=[knn(5), knn(7)])
    assert main(["run", str(suite), "--executor", "local", "--results", str(tmp_path / "res")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ok   r | digits | knn")]
    labels = {line.split(" [")[0] for line in lines}
    assert len(lines) == 2 and len(labels) == 2 and all("knn#" in label for label in labels), lines


def test_defect5__an_address_where_nothing_listens_is_an_error_not_a_hang(tmp_path, suite, capsys):
    address = f"127.0.0.1:{_free_port()}"
    line = _error(capsys, ["run", str(suite), "--address", address, "--results", str(tmp_path / "res")])
    assert f"no Ray cluster answers at {address} (--address): connection refused" in line
    assert "ray start --head" in line


def test_defect5__ray_address_from_the_environment_is_used_and_named(tmp_path, suite, capsys, monkeypatch):
    address = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    line = _error(capsys, ["run", str(suite), "--results", str(tmp_path / "res")])
    assert f"no Ray cluster answers at {address} (RAY_ADDRESS)" in line and "unset it" in line
    line = _error(capsys, ["run", str(suite), "--num-cpus", "2", "--results", str(tmp_path / "res")])
    assert "--num-cpus applies to embedded local Ray only" in line and "RAY_ADDRESS" in line


@pytest.mark.parametrize("args, expected", [
    (["--address", "127.0.0.1:6379", "--num-cpus", "2"], "--num-cpus applies to embedded local Ray only"),
    (["--executor", "local", "--address", "127.0.0.1:6379"], "--address apply to --executor ray only"),
    (["--executor", "local", "--num-cpus", "2"], "--num-cpus apply to --executor ray only"),
    (["--address", "not-an-address"], "is not HOST:PORT"),
    (["--address", "10.0.0.1:99999"], "is not a port number"),
    (["--num-cpus", "0"], "--num-cpus 0: give at least 1 CPU"),
])
def test_defect5__options_that_would_be_ignored_are_errors(tmp_path, suite, capsys, no_ray, args, expected):
    line = _error(capsys, ["run", str(suite), "--results", str(tmp_path / "res"), *args])
    assert expected in line, line


def test_defect5__nothing_to_run_and_dry_runs_start_no_ray(tmp_path, suite, capsys, monkeypatch):
    results = str(tmp_path / "res")
    assert main(["run", str(suite), "--executor", "local", "--results", results]) == 0
    monkeypatch.setattr(executors, "_init_ray", lambda opts: (_ for _ in ()).throw(AssertionError("Ray was started")))
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")  # nothing to run: the cluster is not needed
    capsys.readouterr()
    assert main(["run", str(suite), "--results", results]) == 0
    assert "1 evaluations planned, 1 already done, 0 to run" in capsys.readouterr().err
    monkeypatch.delenv("RAY_ADDRESS")
    fresh = tmp_path / "fresh"
    assert main(["run", str(suite), "--results", str(fresh), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "dry run: 1 evaluations: 1 would run, 0 already stored, 0 would fail" in err
    assert not fresh.exists()  # a dry run writes nothing


def test_dry_run__reports_jobs_that_would_fail_while_planning(tmp_path, capsys):
    ckpts = [RANDOM, {"name": "gone", "arch": "builtin:small-cnn", "path": str(tmp_path / "gone.pt"), "preprocessing": PREP},
             {"name": "dir", "arch": "builtin:small-cnn", "path": str(tmp_path), "preprocessing": PREP}]
    suite = write_suite(tmp_path / "s.yaml", checkpoints=ckpts, tasks=["digits"], protocols=["knn"])
    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(tmp_path / "res"), "--dry-run", "--executor", "local"]) == 1
    err = capsys.readouterr().err
    assert "1 would run, 0 already stored, 2 would fail" in err and "failures by cause (2):" in err
    assert f"extraction failed while planning (nothing ran): CheckpointError: checkpoint 'gone': file {tmp_path / 'gone.pt'} " \
           "does not exist" in err
    assert f"checkpoint 'dir': file {tmp_path} is a directory, not a checkpoint file" in err
