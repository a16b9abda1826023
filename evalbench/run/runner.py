"""The driver: plan a suite, skip what is stored, execute the rest, write every record.

Resume is per stage: a record stage whose ok record exists is skipped; an artifact stage
(pretrain, extract) whose artifact exists is not run again; an artifact stage that no
remaining record needs is not run at all. One driver writes all records.
"""
from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional, TextIO

import torch
from tqdm import tqdm

from evalbench.core.env import code_version
from evalbench.features.artifact import features_exist
from evalbench.results.record import Record
from evalbench.results.store import ArtifactStore, RecordStore
from evalbench.run.executors import EXECUTORS, ExecOptions
from evalbench.run.plan import Plan, plan_suite
from evalbench.run.stages import STAGE_KINDS, Stage, StageOutput
from evalbench.run.worker import CHECKPOINT_FILE
from evalbench.specs.checkpoint import CheckpointSpec, FileWeights
from evalbench.specs.suite import Suite


@dataclass
class RunSummary:
    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (stage label, error)
    keys: list[str] = field(default_factory=list)  # every planned record's key, for the run's own table
    stages_run: dict[str, int] = field(default_factory=dict)  # kind -> stages executed

    @property
    def success(self) -> bool:
        return not self.failed


def _artifact_exists(stage: Stage, artifacts: ArtifactStore) -> bool:
    exists = {"extract": lambda: features_exist(artifacts.features_dir(stage.identity)),
              "pretrain": lambda: (artifacts.checkpoint_dir(stage.identity) / CHECKPOINT_FILE).is_file()}
    return exists[stage.kind]()


def select(plan: Plan, results: RecordStore, artifacts: ArtifactStore) -> tuple[list[Stage], dict[str, StageOutput], int]:
    """(stages to run in topological order, outputs standing in for stored artifacts, records already ok)."""
    needed: set[str] = set()
    done: dict[str, StageOutput] = {}
    skipped = 0

    def need(identity: str) -> None:
        stage = plan.stages[identity]
        if identity in needed or identity in done:
            return
        if STAGE_KINDS.get(stage.kind).produces == "artifact" and not stage.error and _artifact_exists(stage, artifacts):
            done[identity] = StageOutput(identity, "ok", details={"cache": "hit"})
            return
        needed.add(identity)
        for d in stage.deps:
            need(d)

    for stage in plan.records():
        if results.is_done(stage.identity):
            skipped += 1
        else:
            need(stage.identity)
    return [s for s in plan.stages.values() if s.identity in needed], done, skipped


def _checkpoint_dict(spec: CheckpointSpec, weights: Optional[dict]) -> dict:
    return {"name": spec.name, "arch": spec.arch, "weights": weights,
            "sha256": (weights or {}).get("sha256") if isinstance(spec.weights, FileWeights) else None,
            "random_init": spec.random_init, "init_seed": getattr(spec.weights, "seed", None),
            "path": str(spec.path) if spec.path else None, "data": spec.data.as_dict(),
            "skip_missing": list(spec.skip_missing), "meta": spec.meta}


def make_record(stage: Stage, out: StageOutput, *, features_cache: str) -> Record:
    task, protocol, payload = stage.inputs["task"], stage.inputs["protocol"], stage.inputs["task_payload"] or {}
    details = dict(out.details)
    if out.ok:
        details["features"] = {**details.get("features", {}), "cache": features_cache}
    return Record(
        key=stage.identity, checkpoint=_checkpoint_dict(stage.inputs["checkpoint"], stage.inputs["weights"]),
        task={"name": task.name, "version": task.version, "loader": task.loader, "params": task.params,
              "num_classes": task.num_classes, "split_sha256": payload.get("split_sha256"), "data": payload.get("data")},
        protocol={"name": protocol.name, "version": protocol.version, "implementation": protocol.implementation,
                  "params": protocol.params, "stochastic": protocol.stochastic, "view": protocol.view},
        seed=stage.inputs["seed"], status=out.status, metrics=out.metrics if out.ok else {}, details=details,
        error=out.error, features=stage.inputs["features"],
        env={**code_version(), "torch": torch.__version__, "python": platform.python_version(), **out.worker},
        timing_s=out.timing, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _line(stage: Stage, out: StageOutput) -> str:
    w = out.worker
    node = f" node {w['node'][:8]}" if w.get("node") else ""
    where = f"{w.get('host', '?')}:{w.get('pid', '?')}{node} {w.get('device', '?')}"
    if not out.ok:
        return f"FAIL {stage.label} [{where}] {out.error}"
    nums = " ".join(f"{k}={v:.4f}" for k, v in out.metrics.items())
    return f"ok   {stage.label} [{where}] {sum(out.timing.values()):.1f}s {nums}".rstrip()


def run_suite(suite: Suite, *, results: RecordStore, artifacts: Optional[ArtifactStore] = None, executor: str = "ray",
              address: Optional[str] = None, num_cpus: Optional[int] = None, out: Optional[TextIO] = None) -> RunSummary:
    out = out or sys.stderr
    artifacts = artifacts or ArtifactStore(results.root)
    results.sweep()
    artifacts.sweep()
    hashes = artifacts.file_hashes()
    plan = plan_suite(suite, hash_file=hashes)
    hashes.save()
    summary = RunSummary(planned=len(plan.records()), keys=plan.keys)
    todo, done, summary.skipped = select(plan, results, artifacts)
    for stage in [s for s in todo if s.error and STAGE_KINDS.get(s.kind).produces == "record"]:
        results.write(make_record(stage, StageOutput(stage.identity, "error", error=stage.error), features_cache="none"))
        summary.failed.append((stage.label, stage.error))
    runnable = [s for s in todo if not s.error]
    n_records = sum(STAGE_KINDS.get(s.kind).produces == "record" for s in runnable)
    print(f"evalbench: {summary.planned} evaluations planned, {summary.skipped} already done, {n_records} to run "
          f"in {len(runnable)} stages ({executor} executor)", file=out)
    extracted = {s.identity for s in runnable if s.kind == "extract"}
    opts = ExecOptions(storage=str(artifacts.root), address=address, num_cpus=num_cpus)
    with tqdm(total=len(runnable), desc="stages", unit="stage", file=out, dynamic_ncols=True,
              disable=None if runnable else True) as bar:
        for stage, output in EXECUTORS.get(executor)(runnable, done, opts):
            summary.stages_run[stage.kind] = summary.stages_run.get(stage.kind, 0) + 1
            if STAGE_KINDS.get(stage.kind).produces == "record":
                cache = "miss" if stage.deps and stage.deps[0] in extracted else "hit"
                results.write(make_record(stage, output, features_cache=cache))
                if output.ok:
                    summary.ok += 1
                else:
                    summary.failed.append((stage.label, output.error or "unknown error"))
            bar.write(_line(stage, output), file=out)
            bar.update(1)
    return summary


def format_summary(summary: RunSummary) -> str:
    head = (f"{summary.planned} evaluations: {summary.ok} ran ok, {summary.skipped} already stored, "
            f"{len(summary.failed)} failed")
    lines = [head] + [f"  FAILED {label}: {err}" for label, err in summary.failed]
    return "\n".join(lines)
