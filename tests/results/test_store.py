"""Records are validated on read: corrupt, truncated or foreign files are reported and skipped,
and their job counts as not done (so `run` evaluates it again); leftover temp files are swept."""
from __future__ import annotations

import json
import os
import socket

import pytest

from evalbench.results.record import SCHEMA, InvalidRecord, Record
from evalbench.results.store import RecordStore


def record(key: str = "k1", **over) -> Record:
    d = {"schema": SCHEMA, "key": key, "checkpoint": {"name": "a", "arch": "builtin:small-cnn"},
         "task": {"name": "digits", "version": 1}, "protocol": {"name": "knn", "version": 1, "params": {}},
         "seed": None, "status": "ok", "metrics": {"top1": 0.9}, "details": {}, "error": None,
         "env": {}, "timing_s": {}, "created": "2026-01-01T00:00:00+00:00", **over}
    return Record.from_dict(d)


def test_record__round_trips_through_json():
    r = record()
    assert Record.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("change, reason", [
    ({"schema": 1}, "schema 1"),
    ({"status": "done"}, "status 'done'"),
    ({"metrics": {}}, "without metrics"),
    ({"metrics": {"top1": "0.9"}}, "not a finite number"),
    ({"metrics": {"top1": float("inf")}}, "not a finite number"),
    ({"seed": 1.5}, "seed 1.5"),
    ({"status": "error", "metrics": {}, "error": None}, "without an error message"),
    ({"checkpoint": {"arch": "x"}}, "checkpoint.name"),
])
def test_record__invalid_fields_are_refused_with_a_reason(change, reason):
    d = {**record().to_dict(), **change}
    with pytest.raises(InvalidRecord, match=reason):
        Record.from_dict(d)


def test_store__corrupt_truncated_and_foreign_files_are_reported_and_not_done(tmp_path):
    store = RecordStore(tmp_path)
    good = record("good")
    store.write(good)
    store.records_dir.joinpath("trunc.json").write_text(json.dumps(record("trunc").to_dict())[:57])
    store.records_dir.joinpath("foreign.json").write_text(json.dumps({"hello": "world"}))
    store.records_dir.joinpath("binary.json").write_bytes(b"\xff\xfe\x00garbage")
    store.write(record("other"))
    os.replace(store.path("other"), store.path("renamed"))  # key does not match its file name
    assert [r.key for r in store.records()] == ["good"]
    assert sorted(os.path.basename(p) for p in store.problems) == ["binary.json", "foreign.json", "renamed.json",
                                                                   "trunc.json"]
    assert "schema None" in store.problems[str(store.path("foreign"))]
    assert store.is_done("good") and not store.is_done("trunc") and not store.is_done("foreign")
    store.write(record("trunc"))  # the rerun replaces the bad file
    assert store.is_done("trunc") and str(store.path("trunc")) not in store.problems


def test_store__error_records_are_not_done(tmp_path):
    store = RecordStore(tmp_path)
    store.write(record("e", status="error", metrics={}, error="CheckpointError: boom"))
    assert store.get("e").error == "CheckpointError: boom" and not store.is_done("e")


def test_store__sweep_removes_dead_writers_temp_files(tmp_path):
    store = RecordStore(tmp_path)
    store.write(record())
    leftover = store.records_dir / f".tmp-{socket.gethostname().replace('-', '_')}-999999999-ab.part"
    leftover.write_text("{")
    assert store.sweep() == [leftover] and not leftover.exists()
    assert [r.key for r in store.records()] == ["k1"]
