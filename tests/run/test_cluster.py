"""A real two-node Ray cluster on one machine: stages run on both nodes (records name the node),
every record is ok, features extracted on one node are reused on the other (through the shared
--storage path, not Ray's object store), and a rerun does nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAST_LINEAR, PREP, write_suite

HERE = Path(__file__).resolve().parent


def _ckpt(i: int) -> dict:
    return {"name": f"r{i}", "arch": "builtin:small-cnn", "init": "random", "init_seed": i, "preprocessing": PREP}


def test_cluster__two_nodes_share_the_artifact_store(tmp_path):
    s1 = write_suite(tmp_path / "s1.yaml", checkpoints=[_ckpt(0), _ckpt(1)], tasks=["digits"], protocols=["knn"])
    s2 = write_suite(tmp_path / "s2.yaml", checkpoints=[_ckpt(0), _ckpt(1)], tasks=["digits"],
                     protocols=["knn", FAST_LINEAR])
    s3 = write_suite(tmp_path / "s3.yaml", checkpoints=[_ckpt(i) for i in range(6)], tasks=["digits"],
                     protocols=["knn", FAST_LINEAR])
    p = subprocess.run([sys.executable, str(HERE / "cluster_driver.py"), str(tmp_path), str(s1), str(s2), str(s3)],
                       capture_output=True, text=True, timeout=900, cwd=HERE.parents[1])
    steps = {s["step"]: s for s in map(json.loads, (line for line in p.stdout.splitlines() if line.startswith("{")))}
    print(p.stdout[-5000:], p.stderr[-3000:])
    assert set(steps) == {"A only", "B only", "both", "rerun"}, p.stderr[-3000:]
    for s in steps.values():
        assert s["rc"] == 0, s
    records = [json.loads(f.read_text()) for f in (tmp_path / "results" / "records").glob("*.json")]
    assert len(records) == 6 * 2 and all(r["status"] == "ok" for r in records)
    assert not list((tmp_path / "results").glob("artifacts"))  # artifacts live in --storage, not beside records
    by = {(r["checkpoint"]["name"], r["protocol"]["name"]): r for r in records}
    node_a = by[("r0", "knn")]["env"]["node"]
    assert by[("r0", "knn")]["details"]["features"]["node"] == node_a
    # step 2: the linear probes ran on node B, on the features node A extracted (no new extraction)
    for name in ("r0", "r1"):
        lin = by[(name, "linear")]
        assert lin["env"]["node"] != node_a and lin["details"]["features"]["node"] == node_a
        assert lin["details"]["features"]["cache"] == "hit" and lin["features"] == by[(name, "knn")]["features"]
    assert "0 to run" in steps["B only"]["stderr"] or "2 to run" in steps["B only"]["stderr"]
    nodes = {r["env"]["node"] for r in records}
    assert len(nodes) >= 3, nodes  # A, B, and the node that joined for step 3 all ran stages
    assert "6 already done" in steps["both"]["stderr"] or "4 already done" in steps["both"]["stderr"]
    assert "12 evaluations: 0 ran ok, 12 already stored, 0 failed" in steps["rerun"]["stderr"]
    assert len(list((tmp_path / "storage" / "artifacts" / "features").iterdir())) == 6  # one extraction each
