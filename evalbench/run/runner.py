"""The driver: plan a suite, skip what is stored, execute the rest, write every record.

Resume is per stage: a record stage whose ok record exists is skipped; an artifact stage
(pretrain, extract) whose artifact exists is not run again; an artifact stage that no
remaining record needs is not run at all. One driver writes all records.

Preflight, before Ray starts and before any work: the results directory and the artifact store
are writable directories, the executor options make sense (``executors.check_options``), the run
holds the results store's lock (a second run into the same directory waits, then skips what the
first stored), the plan is made (missing files and data become failed jobs, found now), and the
Ray cluster answers (only when there is something to run: nothing to run starts no Ray).

A failed evaluation's record names the stage that failed (``details.failed_stage``: training,
extraction or probe, and whether it failed while planning or running), the reason in one plain
line (``core.errors.plain_message``) and the retries Ray used; the summary groups failures by cause.
"""
from __future__ import annotations

import math
import os
import platform
import re
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, TextIO

import torch
from tqdm import tqdm

from evalbench.core.env import code_version
from evalbench.core.errors import PreflightError, plain_message
from evalbench.features.artifact import features_exist
from evalbench.results.record import Record
from evalbench.results.store import ArtifactStore, RecordStore
from evalbench.results.frame import params_id  # the short params hash of table columns
from evalbench.run.executors import EXECUTORS, ExecOptions, check_options, check_reachable
from evalbench.run.plan import Plan, plan_suite
from evalbench.run.stages import CHECKPOINT_FILE, STAGE_KINDS, Stage, StageOutput
from evalbench.specs.checkpoint import CheckpointSpec, FileWeights
from evalbench.specs.suite import Suite


STAGE_WORDS = {"pretrain": "training", "extract": "extraction", "probe": "probe"}  # what a failure names
KIND_PREFIX = re.compile(r"^(?:pretrain|extract|probe|train) failed: ")  # the worker's own prefix, replaced


@dataclass
class RunSummary:
    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (evaluation label, error)
    keys: list[str] = field(default_factory=list)  # every planned record's key, for the run's own table
    stages_run: dict[str, int] = field(default_factory=dict)  # kind -> stages executed
    to_run: int = 0  # evaluations this run set out to compute
    dry_run: bool = False

    @property
    def success(self) -> bool:
        return not self.failed


# --- preflight ----------------------------------------------------------------------------------


def check_writable_dir(path: Path, *, flag: str, create: bool) -> None:
    """A PreflightError unless ``path`` is (or can be made) a directory this process can write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PreflightError(f"{flag} {path}: is a file, not a directory; give a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(f"{flag} {path}: {existing} is a file, so the directory cannot be made there")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PreflightError(f"{flag} {path}: the directory cannot be made ({e.strerror or e})") from None
    probe_dir = path if path.is_dir() else existing
    try:
        fd, probe = tempfile.mkstemp(prefix=".evalbench-write-test-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PreflightError(f"{flag} {path}: cannot write in {probe_dir} ({e.strerror or e}); give a writable "
                             "directory") from None


def check_stores(results: RecordStore, artifacts: ArtifactStore, *, create: bool) -> None:
    """The results directory and the artifact store are writable directories, and nothing in them
    that must be a directory is a file."""
    check_writable_dir(results.root, flag="--results", create=create)
    if artifacts.root != results.root:
        check_writable_dir(artifacts.root, flag="--storage", create=create)
    for sub, flag in ((results.records_dir, "--results"), (artifacts.artifacts, "--storage"),
                      (artifacts.root / "index", "--storage")):
        if sub.exists() and not sub.is_dir():
            raise PreflightError(f"{flag}: {sub} is a file, but evalbench keeps a directory there; move it away")


# --- selection ------------------------------------------------------------------------------------


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


def failure_origin(stage: Stage, plan: Plan, outputs: dict[str, StageOutput]) -> tuple[Stage, str]:
    """(the stage whose failure failed this one, "planning" or "running"): the most upstream failure."""
    for d in stage.deps:
        dep = plan.stages.get(d)
        if dep is not None and (dep.error or (d in outputs and not outputs[d].ok)):
            return failure_origin(dep, plan, outputs)
    return stage, ("planning" if stage.error else "running")


def describe_failure(stage: Stage, out: StageOutput, plan: Plan, outputs: dict[str, StageOutput]) -> StageOutput:
    """The output with its error in one plain line that starts with the failed stage, and the failed
    stage, when and the retries Ray used in its details."""
    origin, when = failure_origin(stage, plan, outputs)
    word = STAGE_WORDS.get(origin.kind, origin.kind)
    reason = KIND_PREFIX.sub("", plain_message(out.error or "unknown error"))
    error = f"{word} failed" + (" while planning (nothing ran)" if when == "planning" else "") + f": {reason}"
    details = {**out.details, "failed_stage": {"stage": word, "label": origin.label, "when": when,
                                               "retries": int(out.details.get("retries", 0))}}
    return StageOutput(out.identity, "error", {}, details, error, out.timing, out.worker)


def _finite_metrics(out: StageOutput) -> StageOutput:
    """An ok output whose metrics are not all finite numbers is a failed probe: no wrong number stored as ok."""
    bad = [k for k, v in out.metrics.items()
           if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
    if out.ok and (bad or not out.metrics):
        why = f"metric {bad[0]!r} is {out.metrics[bad[0]]!r}, not a finite number" if bad else "it reported no metrics"
        return StageOutput(out.identity, "error", {}, out.details, f"probe failed: {why}", out.timing, out.worker)
    return out


def _json_safe(value: Any) -> Any:
    """Details as JSON can hold them: non-finite floats become strings ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def make_record(stage: Stage, out: StageOutput, *, features_cache: str) -> Record:
    task, protocol, payload = stage.inputs["task"], stage.inputs["protocol"], stage.inputs["task_payload"] or {}
    details = _json_safe(dict(out.details))
    if out.ok and stage.inputs["features"] is not None:  # a train stage (fine-tuning) reads no features
        details["features"] = {**details.get("features", {}), "cache": features_cache}
    return Record(
        key=stage.identity, checkpoint=_checkpoint_dict(stage.inputs["checkpoint"], stage.inputs["weights"]),
        task={"name": task.name, "version": task.version, "loader": task.loader, "params": task.params,
              "num_classes": task.num_classes, "split_sha256": payload.get("split_sha256"), "data": payload.get("data")},
        protocol={"name": protocol.name, "version": protocol.version, "implementation": protocol.implementation,
                  "params": protocol.params, "stochastic": protocol.stochastic, "view": protocol.view},
        seed=stage.inputs["seed"], status=out.status, metrics=out.metrics if out.ok else {}, details=details,
        error=None if out.ok else plain_message(out.error or "unknown error"), features=stage.inputs["features"],
        env={**code_version(), "torch": torch.__version__, "python": platform.python_version(), **out.worker},
        timing_s=out.timing, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _line(stage: Stage, out: StageOutput, label: Optional[str] = None) -> str:
    w = out.worker
    node = f" node {w['node'][:8]}" if w.get("node") else ""
    where = f"{w.get('host', '?')}:{w.get('pid', '?')}{node} {w.get('device', '?')}"
    label = label or stage.label
    if not out.ok:
        return f"FAIL {label} [{where}] {plain_message(out.error, limit=400)}"
    nums = " ".join(f"{k}={v:.4f}" for k, v in out.metrics.items())
    return f"ok   {label} [{where}] {sum(out.timing.values()):.1f}s {nums}".rstrip()


def display_labels(plan: Plan) -> dict[str, str]:
    """Each record stage's label, made unique: two entries of one protocol with different params get
    the params' short hash the table uses for their columns (``knn#1a2b3c``)."""
    labels = {s.identity: s.label for s in plan.records()}
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    for s in plan.records():
        if counts[s.label] > 1:
            p = s.inputs["protocol"]
            labels[s.identity] = s.label.replace(f"| {p.name}", f"| {p.name}#{params_id(p.params)}", 1)
    return labels


def run_suite(suite: Suite, *, results: RecordStore, artifacts: Optional[ArtifactStore] = None, executor: str = "ray",
              address: Optional[str] = None, num_cpus: Optional[int] = None, out: Optional[TextIO] = None,
              dry_run: bool = False, wait_for_lock: bool = True) -> RunSummary:
    """Run the suite (see the module doc); ``dry_run``: every check and the plan, then report what would
    run, without running, writing or starting Ray."""
    out = out or sys.stderr
    artifacts = artifacts or ArtifactStore(results.root)
    EXECUTORS.get(executor)
    opts = check_options(executor, ExecOptions(storage=str(artifacts.root), address=address, num_cpus=num_cpus))
    check_stores(results, artifacts, create=not dry_run)
    say = lambda msg: print(f"evalbench: {msg}", file=out, flush=True)  # noqa: E731
    with nullcontext() if dry_run else results.lock(wait=wait_for_lock, say=say):
        if not dry_run:
            results.sweep()
            artifacts.sweep()
        hashes = artifacts.file_hashes()
        plan = plan_suite(suite, hash_file=hashes)
        if not dry_run:
            hashes.save()
        return _execute(plan, results, artifacts, executor=executor, opts=opts, out=out, dry_run=dry_run)


def _execute(plan: Plan, results: RecordStore, artifacts: ArtifactStore, *, executor: str, opts: ExecOptions,
             out: TextIO, dry_run: bool) -> RunSummary:
    summary = RunSummary(planned=len(plan.records()), keys=plan.keys, dry_run=dry_run)
    labels = display_labels(plan)
    todo, done, summary.skipped = select(plan, results, artifacts)
    outputs: dict[str, StageOutput] = dict(done)
    for stage in [s for s in todo if s.error and STAGE_KINDS.get(s.kind).produces == "record"]:
        failure = describe_failure(stage, StageOutput(stage.identity, "error", error=stage.error), plan, outputs)
        if not dry_run:
            results.write(make_record(stage, failure, features_cache="none"))
        summary.failed.append((labels[stage.identity], failure.error))
    runnable = [s for s in todo if not s.error]
    summary.to_run = sum(STAGE_KINDS.get(s.kind).produces == "record" for s in runnable)
    where = opts.address and f", Ray cluster at {opts.address} ({opts.address_from})" or ""
    print(f"evalbench: {'dry run: ' if dry_run else ''}{summary.planned} evaluations planned, {summary.skipped} already "
          f"done, {summary.to_run} to run in {len(runnable)} stages ({executor} executor{where})"
          + (f", {len(summary.failed)} failed while planning" if summary.failed else ""), file=out)
    if runnable and executor == "ray":
        check_reachable(opts)
    if dry_run:
        return summary
    extracted = {s.identity for s in runnable if s.kind == "extract"}
    with tqdm(total=len(runnable), desc="stages", unit="stage", file=out, dynamic_ncols=True,
              disable=None if runnable else True) as bar:
        for stage, output in EXECUTORS.get(executor)(runnable, done, opts):
            summary.stages_run[stage.kind] = summary.stages_run.get(stage.kind, 0) + 1
            if STAGE_KINDS.get(stage.kind).produces == "record":
                output = _finite_metrics(output)
                if not output.ok:
                    output = describe_failure(stage, output, plan, outputs)
                cache = "miss" if stage.deps and stage.deps[0] in extracted else "hit"
                results.write(make_record(stage, output, features_cache=cache))
                if output.ok:
                    summary.ok += 1
                else:
                    summary.failed.append((labels[stage.identity], output.error))
            outputs[stage.identity] = output
            bar.write(_line(stage, output, labels.get(stage.identity)), file=out)
            bar.update(1)
    return summary


def format_summary(summary: RunSummary) -> str:
    """The counts, then the failures grouped by cause (one line per cause, the evaluations it failed below)."""
    if summary.dry_run:
        head = (f"dry run: {summary.planned} evaluations: {summary.to_run} would run, {summary.skipped} already "
                f"stored, {len(summary.failed)} would fail")
    else:
        head = (f"{summary.planned} evaluations: {summary.ok} ran ok, {summary.skipped} already stored, "
                f"{len(summary.failed)} failed")
    causes: dict[str, list[str]] = {}
    for label, err in summary.failed:
        causes.setdefault(err, []).append(label)
    lines = [head]
    if causes:
        lines.append(f"failures by cause ({len(causes)}):")
    for err, labels in causes.items():
        lines.append(f"  {err}  [{len(labels)} evaluation{'s' if len(labels) > 1 else ''}]")
        lines += [f"    FAILED {label}" for label in labels]
    return "\n".join(lines)
