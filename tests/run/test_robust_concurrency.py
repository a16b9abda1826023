"""Issue 11, defect 7: two runs into one results directory never run the same evaluation twice (the
second waits for the first's lock, says so, then skips what it stored), and no damaged record file
makes `table` or `run` fail."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from evalbench.cli import main
from evalbench.results.store import LOCK_FILE, RecordStore
from tests.conftest import PREP, write_suite
from tests.results.test_store import record

REPO = Path(__file__).resolve().parents[2]


def _ckpt(i: int) -> dict:
    return {"name": f"r{i}", "arch": "builtin:small-cnn", "init": "random", "init_seed": i, "preprocessing": PREP}


def _start(suite: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalbench.cli", "run", str(suite), "--results", str(results),
                             "--executor", "local", "--format", "csv"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


SECOND = """
import sys, time
from pathlib import Path
from evalbench.cli import main
import evalbench.default, evalbench.results.tables, evalbench.run.runner  # what `run` imports, before the race
print("ready", flush=True)
lock, pid = Path(sys.argv[1]), sys.stdin.readline().strip()
deadline = time.time() + 120
while time.time() < deadline and pid not in (lock.read_text() if lock.exists() else ""):
    time.sleep(0.002)
sys.exit(main(sys.argv[2:]))
"""


def test_defect7__a_second_run_waits_for_the_first_and_skips_what_it_stored(tmp_path):
    first_suite = write_suite(tmp_path / "a.yaml", checkpoints=[_ckpt(i) for i in range(3)], tasks=["digits"],
                              protocols=["knn"])
    second_suite = write_suite(tmp_path / "b.yaml", checkpoints=[_ckpt(i) for i in range(4)], tasks=["digits"],
                               protocols=["knn"])
    results = tmp_path / "res"
    # the second run is imported first, then starts the moment the first run holds the lock
    second = subprocess.Popen([sys.executable, "-c", SECOND, str(results / LOCK_FILE), "run", str(second_suite),
                               "--results", str(results), "--executor", "local"], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert second.stdout.readline().strip() == "ready"
    first = _start(first_suite, results)
    second.stdin.write(f"{first.pid}\n")
    second.stdin.flush()
    _, err1 = first.communicate(timeout=300)
    _, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert f"another run (pid {first.pid} on " in err2 and "waiting for it to finish" in err2, err2
    assert "4 evaluations: 1 ran ok, 3 already stored, 0 failed" in err2, err2  # nothing the first did is repeated
    records = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    by_pid = sorted(r["env"]["pid"] for r in records)
    assert by_pid == sorted([first.pid] * 3 + [second.pid])  # each record written by exactly one run


def test_defect7__lock_without_waiting_names_the_holder(tmp_path):
    store = RecordStore(tmp_path)
    said: list[str] = []
    with store.lock(say=said.append):
        proc = subprocess.run([sys.executable, "-c", "from pathlib import Path; from evalbench.results.store import "
                               "RecordStore\nwith RecordStore(Path(r'%s')).lock(wait=False): pass" % tmp_path],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "PreflightError: another run (pid " in proc.stderr and f"writing into {tmp_path}" in proc.stderr
    assert said == []  # the first run took the lock without waiting
    with store.lock(wait=False):  # released when the holder's block ends
        pass


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=4), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))


@st.composite
def damaged_records(draw):
    """A valid record with one field replaced by any JSON value or removed, or its text cut short."""
    good = record("k", checkpoint={"name": "a", "arch": "builtin:small-cnn", "random_init": False,
                                   "meta": {"pretrain": {"method": "simclr", "knobs": {"lr": 0.1}}}}).to_dict()
    how = draw(st.sampled_from(["replace", "remove", "cut"]))
    if how == "cut":
        text = json.dumps(good)
        return text[: draw(st.integers(0, len(text) - 1))]
    path = draw(st.sampled_from([p for p in _paths(good) if p]))
    node = good
    for part in path[:-1]:
        node = node[part]
    if how == "remove":
        del node[path[-1]]
    else:
        node[path[-1]] = draw(JSON)
    return json.dumps(good)


@seed(11)
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=damaged_records())
def test_defect7__no_damaged_record_makes_table_fail(tmp_path, capsys, text):
    store = RecordStore(tmp_path)
    store.write(record("good"))
    store.records_dir.joinpath("k.json").write_text(text)
    capsys.readouterr()
    assert main(["table", "--results", str(tmp_path)]) == 0  # renders the valid records, reports the rest
    out, err = capsys.readouterr()
    assert "a " in out and "Traceback" not in err
    assert not store.is_done("k") or RecordStore(tmp_path).get("k").ok  # not done unless it is a valid ok record
