"""The bottom layer: the one identity function, atomic writes and their sweep, the file-hash memo."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from evalbench.core.atomic import atomic_path, sweep_temp, write_json
from evalbench.core.filehash import FileHashIndex, sha256_file
from evalbench.core.identity import identity


def test_identity__key_order_and_tuple_vs_list_do_not_matter_values_do():
    a = identity("probe", {"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}}, version=1)
    assert a == identity("probe", {"z": {"a": 2, "b": 1}, "y": (1, 2), "x": 1}, version=1)
    assert a != identity("probe", {"x": 1, "y": [1, 2], "z": {"b": 1, "a": 3}}, version=1)
    assert a != identity("probe", {"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}}, version=2)  # code version
    assert a != identity("extract", {"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}}, version=1)  # kind
    assert identity("k", {"v": 1}, version=1) != identity("k", {"v": 1.5}, version=1)


@pytest.mark.parametrize("bad", [{"p": object()}, {"p": float("nan")}, {1: "int key"}, {"p": {1, 2}}])
def test_identity__refuses_values_that_have_no_stable_text(bad):
    with pytest.raises(TypeError):
        identity("k", bad, version=1)


def test_atomic_path__file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "d" / "r.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip() == '{\n "a": 1\n}'
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temp left by a failed write


def test_atomic_path__directory_artifact_first_writer_wins(tmp_path):
    target = tmp_path / "features" / "abc"
    for value in ("first", "second"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "x.txt").write_text(value)
    assert (target / "x.txt").read_text() == "first"  # same identity = same content; the second is dropped
    assert sorted(p.name for p in target.parent.iterdir()) == ["abc"]


def test_sweep_temp__removes_dead_writers_files_keeps_live_ones(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    import socket
    host = socket.gethostname().replace("-", "_")
    stale = tmp_path / f".tmp-{host}-{dead_pid}-ab12.part"
    stale.write_text("half a record")
    live = tmp_path / f".tmp-{host}-{os.getpid()}-cd34.part"
    live.write_text("being written")
    record = tmp_path / "k.json"
    record.write_text("{}")
    assert sweep_temp(tmp_path) == [stale]
    assert live.exists() and record.exists() and not stale.exists()


def test_file_hash_index__memoised_on_size_and_mtime(tmp_path):
    f = tmp_path / "ckpt.pt"
    f.write_bytes(b"a" * 1000)
    memo = tmp_path / "index" / "hashes.json"
    idx = FileHashIndex(memo)
    assert idx(f) == sha256_file(f) and idx.hashed == [str(f.resolve())]
    idx.save()
    again = FileHashIndex(memo)
    assert again(f) == sha256_file(f) and again.hashed == []  # not read again
    f.write_bytes(b"b" * 1001)  # changed content and size
    assert again(f) == sha256_file(f) and again.hashed == [str(f.resolve())]
