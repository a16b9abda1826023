"""Runs inside a subprocess of test_cluster.py: a real two-node Ray cluster on this machine
(ray.cluster_utils.Cluster: a head with no CPUs that only hosts the GCS, plus worker nodes that
are separate raylet processes), and `evalbench run --address` against it, as a user would.

Steps: (1) only node A: extract + knn for two checkpoints; (2) node B joins, node A leaves: the
linear probes run on B from the features A extracted (reused through --storage, not the object
store); (3) both nodes: new checkpoints spread over A' and B; (4) rerun: nothing to do.
Prints one JSON line per step with the CLI's return code and stderr tail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ray.cluster_utils import Cluster

work = Path(sys.argv[1])
suites = sys.argv[2:]
RAY_TMP = tempfile.mkdtemp(prefix="evb-ray-")  # short: Ray's socket paths must stay under 107 bytes
os.environ["RAY_TMPDIR"] = RAY_TMP  # Ray writes its current-cluster address file under RAY_TMPDIR/ray
os.makedirs(os.path.join(RAY_TMP, "ray"))
env = {**os.environ, "RAY_TMPDIR": RAY_TMP, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}
node_args = {"num_cpus": 1, "object_store_memory": 80 << 20}
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args={"num_cpus": 0, "object_store_memory": 80 << 20, "include_dashboard": False,
                                  "temp_dir": os.path.join(RAY_TMP, "ray")})


def run(suite: str, step: str) -> None:
    cmd = [sys.executable, "-m", "evalbench.cli", "run", suite, "--address", cluster.address,
           "--results", str(work / "results"), "--storage", str(work / "storage"), "--format", "csv"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    print(json.dumps({"step": step, "rc": p.returncode, "stdout": p.stdout[-3000:], "stderr": p.stderr[-3000:]}),
          flush=True)


try:
    a = cluster.add_node(**node_args)
    run(suites[0], "A only")
    b = cluster.add_node(**node_args)
    cluster.remove_node(a)
    cluster.wait_for_nodes()
    run(suites[1], "B only")
    cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    run(suites[2], "both")
    run(suites[2], "rerun")
finally:
    cluster.shutdown()
    shutil.rmtree(RAY_TMP, ignore_errors=True)
