"""End to end (issue 10): the default run's evaluation alone, timed, with its breakdown per stage.

    .venv/bin/python benchmarks/e2e.py --store DIR           # DIR: --storage of an earlier default run
    .venv/bin/python benchmarks/run_all.py --e2e-store DIR   # the same, written into figures.json ("e2e")

"The evaluation" is everything after the pretraining stages: extraction of every checkpoint x task
and every probe. To time it alone, a fresh store is made holding only the earlier run's trained
checkpoints (``artifacts/checkpoints``, hard links: no copy) and the file-hash memo, and
``evalbench run --results FRESH --storage FRESH`` runs the default suite there: the plan finds the
checkpoints stored, so no pretrain stage runs, and every extract and probe stage does. Wall time is
the whole command (Ray start included); the breakdown sums, per stage kind and task, the probes'
``timing_s`` and the extract stages' own times from their features' metadata (``dataset_s``: loading
the task; ``extract_s``: the forward passes), each features artifact once. These are seconds inside
the workers; two run at once on 2 CPUs, so their sum exceeds the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def fresh_store(old: Path, new: Path) -> int:
    """new/artifacts/checkpoints (hard links of old's) and new/index; returns the checkpoints linked."""
    src = old / "artifacts" / "checkpoints"
    if not src.is_dir():
        raise SystemExit(f"{src} does not exist: run `evalbench run --results DIR` once (it trains the checkpoints), "
                         "then pass that DIR (or its --storage) as --store")
    shutil.copytree(src, new / "artifacts" / "checkpoints", copy_function=os.link)
    if (old / "index").is_dir():
        shutil.copytree(old / "index", new / "index")
    return len(list(src.iterdir()))


def breakdown(results: Path) -> dict:
    """Seconds per stage kind and per (kind, task), summed over the records (each features artifact once)."""
    per_kind: dict[str, float] = defaultdict(float)
    per_task: dict[str, float] = defaultdict(float)
    per_protocol: dict[str, float] = defaultdict(float)
    seen_features: set[str] = set()
    n = 0
    for path in sorted((results / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        n += 1
        task = rec.get("task", {}).get("name") if isinstance(rec.get("task"), dict) else str(rec.get("task"))
        proto = rec.get("protocol", {}).get("name") if isinstance(rec.get("protocol"), dict) else str(rec.get("protocol"))
        feats = (rec.get("details") or {}).get("features") or {}
        fid = feats.get("identity")
        if fid and fid not in seen_features:  # the extract stage's own times, from its features' metadata
            seen_features.add(fid)
            for part in ("dataset_s", "extract_s"):
                per_kind[f"extract ({part[:-2]})"] += float(feats.get(part) or 0)
                per_task[f"extract ({part[:-2]}) {task}"] += float(feats.get(part) or 0)
        for kind, secs in (rec.get("timing_s") or {}).items():
            per_kind[kind] += secs
            per_task[f"{kind} {task}"] += secs
            per_protocol[f"{proto} {task}"] += secs
    r = lambda d: {k: round(v, 1) for k, v in sorted(d.items())}  # noqa: E731
    return {"records": n, "per_kind_s": r(per_kind), "per_kind_task_s": r(per_task), "per_probe_task_s": r(per_protocol)}


def run(store: Path, *, keep: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="evalbench-e2e-"))
    try:
        linked = fresh_store(store, work)
        load_before = round(os.getloadavg()[0], 2)
        t0 = time.perf_counter()
        proc = subprocess.run([str(ROOT / ".venv" / "bin" / "evalbench"), "run", "--results", str(work), "--storage", str(work)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"evalbench run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        trained = sum("pretrain " in line and line.startswith("ok") for line in proc.stdout.splitlines())
        return {"wall_s": round(wall, 1), "checkpoints_linked": linked, "pretrain_stages_run": trained,
                "load_before": load_before, "load_after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
                "summary": next((ln for ln in (proc.stdout + proc.stderr).splitlines() if " evaluations: " in ln), "")[:300], **breakdown(work)}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="the --storage (or --results) of an earlier default run")
    ap.add_argument("--keep", action="store_true", help="keep the fresh results/store directory")
    args = ap.parse_args()
    print(json.dumps(run(args.store, keep=args.keep), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
