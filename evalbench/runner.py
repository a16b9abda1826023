"""The driver: plan a suite, skip what is stored ok, execute the rest, write every record."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO

from tqdm import tqdm

from evalbench.executor import EXECUTORS, ExecOptions
from evalbench.store import RecordStore, make_record
from evalbench.suite import Job, Suite, plan
from evalbench.worker import JobOutcome


@dataclass
class RunSummary:
    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job label, error)
    keys: list[str] = field(default_factory=list)  # every planned job's key, for the run's own table

    @property
    def success(self) -> bool:
        return not self.failed


def _line(job: Job, out: JobOutcome) -> str:
    where = f"{out.worker.get('host', '?')}:{out.worker.get('pid', '?')} {out.worker.get('device', '?')}"
    if out.status != "ok":
        return f"FAIL {job.label} [{where}] {out.error}"
    nums = " ".join(f"{k}={v:.4f}" for k, v in out.metrics.items())
    secs = sum(out.timing.values())
    return f"ok   {job.label} [{where}] {secs:.1f}s {nums}"


def run_suite(suite: Suite, *, store: RecordStore, executor: str = "ray", address: Optional[str] = None,
              num_cpus: Optional[int] = None, out: TextIO = sys.stderr) -> RunSummary:
    jobs = plan(suite)
    summary = RunSummary(planned=len(jobs), keys=[j.key for j in jobs])
    todo = [j for j in jobs if not store.is_done(j.key)]
    summary.skipped = len(jobs) - len(todo)
    runnable = []
    for job in todo:  # jobs that failed while planning (missing checkpoint file, split file) are recorded now
        if job.plan_error:
            store.write(make_record(job, status="error", error=job.plan_error))
            summary.failed.append((job.label, job.plan_error))
        else:
            runnable.append(job)
    print(f"evalbench: {len(jobs)} jobs planned, {summary.skipped} already done, {len(runnable)} to run "
          f"({executor} executor)", file=out)
    opts = ExecOptions(cache_dir=str(store.feature_cache), address=address, num_cpus=num_cpus)
    with tqdm(total=len(runnable), desc="jobs", unit="job", file=out, dynamic_ncols=True, disable=None if runnable else True) as bar:
        for job, outcome in EXECUTORS.get(executor)(runnable, opts):
            store.write(make_record(job, status=outcome.status, metrics=outcome.metrics, details=outcome.details,
                                    error=outcome.error, timing=outcome.timing, worker=outcome.worker))
            if outcome.status == "ok":
                summary.ok += 1
            else:
                summary.failed.append((job.label, outcome.error or "unknown error"))
            bar.write(_line(job, outcome), file=out)
            bar.update(1)
    return summary


def format_summary(summary: RunSummary) -> str:
    head = (f"{summary.planned} jobs: {summary.ok} ran ok, {summary.skipped} already stored, "
            f"{len(summary.failed)} failed")
    lines = [head] + [f"  FAILED {label}: {err}" for label, err in summary.failed]
    return "\n".join(lines)
