"""Command line: `evalbench run|pretrain|sweep|table|leaderboard|diff|check-targets|list|splits|subsets|inspect|convert`;
the only argparse namespace."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from evalbench.core.errors import EvalbenchError
from evalbench.core.registry import Registry

COMMANDS: Registry[Callable[[argparse.Namespace], int]] = Registry("command", "evalbench --help")
LISTINGS: Registry[Callable[[], list[str]]] = Registry("listing", "evalbench list --help")


def _report_problems(problems: dict[str, str]) -> None:
    from evalbench.results.frame import problem_lines

    for line in problem_lines(problems):
        print(line, file=sys.stderr)


def _run_and_report(suite, a: argparse.Namespace, render: Callable[[list], str]) -> int:
    """Run a suite with the CLI's store/executor options, print this run's table and the summary."""
    from evalbench.results.store import ArtifactStore, RecordStore
    from evalbench.run.runner import format_summary, run_suite

    results = RecordStore(Path(a.results))
    dry_run = getattr(a, "dry_run", False)
    summary = run_suite(suite, results=results, artifacts=ArtifactStore(Path(a.storage or a.results)),
                        executor=a.executor, address=a.address, num_cpus=a.num_cpus, dry_run=dry_run)
    if not dry_run:
        keys = set(summary.keys)
        print(render([r for r in results.records() if r.key in keys]))
        _report_problems(results.problems)
    print(format_summary(summary), file=sys.stderr)
    return 0 if summary.success else 1


@COMMANDS.register("run")
def cmd_run(a: argparse.Namespace) -> int:
    from evalbench.default import default_suite
    from evalbench.results.tables import render_table
    from evalbench.specs.suite import load_suite

    suite = load_suite(Path(a.suite)) if a.suite else default_suite()
    if a.amp:
        suite = replace(suite, amp=True)
    if a.trust_pickle:  # every checkpoint of this suite is trusted (per entry: `trust_pickle: true`)
        suite = replace(suite, checkpoints=tuple(replace(c, trust_pickle=True) for c in suite.checkpoints))
    return _run_and_report(suite, a, lambda records: render_table(records, fmt=a.format,
                                                                  storage=Path(a.storage or a.results)))


@COMMANDS.register("pretrain")
def cmd_pretrain(a: argparse.Namespace) -> int:
    import shutil

    from evalbench.pretrain.config import load_pretrain_config
    from evalbench.results.store import ArtifactStore
    from evalbench.run.executors import EXECUTORS, ExecOptions
    from evalbench.run.plan import PlanContext, plan_pretrain
    from evalbench.run.stages import CHECKPOINT_FILE
    from evalbench.specs.checkpoint import CheckpointSpec, StageWeights

    cfg = load_pretrain_config(Path(a.config))
    store = ArtifactStore(Path(a.storage))
    spec = CheckpointSpec(name=Path(a.config).stem, arch=cfg.arch, data=cfg.data,
                          weights=StageWeights(kind="pretrain", inputs={"config": cfg}))
    hashes = store.file_hashes()
    stage = plan_pretrain(spec, PlanContext(hash_file=hashes))
    hashes.save()
    if stage.error:
        raise EvalbenchError(stage.error)
    weights = store.checkpoint_dir(stage.identity) / CHECKPOINT_FILE
    if weights.is_file():
        print(f"evalbench: already trained: {weights}", file=sys.stderr)
    else:
        print(f"evalbench: pretraining {cfg.method} ({cfg.arch}, {cfg.epochs} epochs on {cfg.task}) -> {weights.parent}",
              file=sys.stderr)
        opts = ExecOptions(storage=str(store.root), address=a.address, num_cpus=a.num_cpus)
        executor = a.executor or ("ray" if cfg.workers > 1 else "local")  # data-parallel runs on Ray Train
        for _, out in EXECUTORS.get(executor)([stage], {}, opts):
            if not out.ok:
                print(f"evalbench: error: {out.error}", file=sys.stderr)
                return 1
            curve = ", ".join(f"{v:.3f}" for v in out.details.get("loss_curve", []))
            print(f"evalbench: trained in {out.timing.get('train', 0):.1f}s (resumed from epoch "
                  f"{out.details.get('resumed_from', 0)}); loss per epoch: {curve}", file=sys.stderr)
    if a.out:
        out_path = Path(a.out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, out_path)
        shutil.copyfile(weights.with_suffix(".json"), out_path.with_suffix(".json"))
        weights = out_path
    print(weights)
    return 0


@COMMANDS.register("sweep")
def cmd_sweep(a: argparse.Namespace) -> int:
    from evalbench.pretrain.sweep import load_sweep
    from evalbench.results.ablation import render_ablation

    sweep = load_sweep(Path(a.grid), yes=a.yes)
    print(f"evalbench: sweep {sweep.name!r}: {len(sweep.points)} points x {len(sweep.seeds)} seeds, evaluated on "
          f"{', '.join(t.name for t in sweep.suite.tasks)} with {', '.join(p.name for p in sweep.suite.protocols)}",
          file=sys.stderr)
    return _run_and_report(sweep.suite, a, lambda records: render_ablation(records, fmt=a.format, sweep=sweep.name))


@COMMANDS.register("table")
def cmd_table(a: argparse.Namespace) -> int:
    from evalbench.results.store import RecordStore
    from evalbench.results.tables import render_table

    store = RecordStore(Path(a.results))
    if not store.records_dir.is_dir():
        raise EvalbenchError(f"no records under {store.records_dir}; run `evalbench run` first or pass --results DIR")
    if a.transfer or a.source:  # source -> target for linear, k-NN and fine-tuning (results/transfer.py)
        from evalbench.results.transfer import render_transfer
        print(render_transfer(list(store.records()), fmt=a.format, source=a.source))
    else:
        print(render_table(list(store.records()), fmt=a.format, task=a.task, protocol=a.protocol,
                           storage=Path(a.storage or a.results)))
    _report_problems(store.problems)
    return 0


@COMMANDS.register("diff")
def cmd_diff(a: argparse.Namespace) -> int:
    """Cell by cell, OLD vs NEW (results directories or leaderboard CSVs): exit 1 when a number moved by
    more than --tol or a cell disappeared (results/gates.py)."""
    from evalbench.results.gates import diff_cells, load_cells, render_outcome

    outcome = diff_cells(load_cells(Path(a.old)), load_cells(Path(a.new)), tol=a.tol)
    print(render_outcome(outcome, fmt=a.format, show_all=a.all))
    return 0 if outcome.passed else 1


@COMMANDS.register("check-targets")
def cmd_check_targets(a: argparse.Namespace) -> int:
    """Exit 1 when a target's cell is below its minimum - tolerance, or missing (results/gates.py)."""
    from evalbench.results.gates import check_targets, load_cells, load_targets, render_outcome

    targets = load_targets(Path(a.targets))
    outcome = check_targets(targets, load_cells(Path(a.results)))
    print(render_outcome(outcome, fmt=a.format, show_all=a.all))
    return 0 if outcome.passed else 1


@COMMANDS.register("leaderboard")
def cmd_leaderboard(a: argparse.Namespace) -> int:
    from evalbench.results import leaderboard
    from evalbench.results.frame import stored_records

    records, problems = stored_records(Path(a.results))
    _report_problems(problems)
    if a.suite:
        from evalbench.specs.suite import load_suite
        records = leaderboard.suite_records(records, load_suite(Path(a.suite)))
    files = leaderboard.build(records, storage=Path(a.storage or a.results), plots=a.plots, tsne=a.tsne or ())
    out = Path(a.out)
    if a.check:  # CI: the committed leaderboard must be what the records give
        diff = leaderboard.check(out, files)
        if diff:
            print(diff, end="")
            print(f"evalbench: the leaderboard in {out} is not what the records give (diff above); regenerate it "
                  "(the same command without --check) and commit it", file=sys.stderr)
            return 1
        print(f"evalbench: the leaderboard in {out} is what the records give ({len(files)} files)", file=sys.stderr)
        return 0
    leaderboard.write(out, files)
    print(f"evalbench: wrote {len(files)} files to {out}: {', '.join(files)}", file=sys.stderr)
    return 0


@LISTINGS.register("tasks")
def _list_tasks() -> list[str]:
    from evalbench.specs.task import builtin_task_files, data_status, resolve_task

    return [f"{t.name:14s} v{t.version}  {data_status(t):9s}  {t.description}" for t in map(resolve_task, builtin_task_files())]


@LISTINGS.register("protocols")
def _list_protocols() -> list[str]:
    from evalbench.specs.protocol import builtin_protocol_files, resolve_protocol

    return [f"{p.name:10s} v{p.version}  {'stochastic   ' if p.stochastic else 'deterministic'}  {p.description}"
            for p in map(resolve_protocol, builtin_protocol_files())]


@LISTINGS.register("encoders")
def _list_encoders() -> list[str]:
    from evalbench.encoders import list_encoders

    return list_encoders()


@LISTINGS.register("loaders")
def _list_loaders() -> list[str]:
    from evalbench.data import LOADERS

    return LOADERS.names()


@LISTINGS.register("views")
def _list_views() -> list[str]:
    from evalbench.data.views import VIEWS

    return [f"{n:10s} v{VIEWS.get(n).version}  {VIEWS.get(n).description}" for n in VIEWS]


@COMMANDS.register("list")
def cmd_list(a: argparse.Namespace) -> int:
    print("\n".join(LISTINGS.get(a.what)()))
    return 0


@COMMANDS.register("splits")
def cmd_splits(a: argparse.Namespace) -> int:
    from evalbench.specs.task import resolve_task, write_task_split

    spec = resolve_task(a.task)
    if spec.split_file.exists() and not a.force:
        raise EvalbenchError(f"{spec.split_file} exists; splits are fixed once made (pass --force to remake it)")
    print(f"wrote {write_task_split(spec)}")
    return 0


@COMMANDS.register("subsets")
def cmd_subsets(a: argparse.Namespace) -> int:
    """The task's label-subset index file (fine-tuning protocols): deterministic, so remaking it gives
    the same bytes for the same splits and data."""
    from evalbench.specs.subsets import write_task_subsets
    from evalbench.specs.task import resolve_task

    print(f"wrote {write_task_subsets(resolve_task(a.task), draws=a.draws)}")
    return 0


def _load_rules(a: argparse.Namespace):
    from evalbench.checkpoints import LoadRules
    from evalbench.specs.checkpoint import read_rules_file

    rules = read_rules_file(Path(a.rules)) if a.rules else LoadRules()
    return rules.merged(LoadRules(select=a.select)) if a.select else rules


@COMMANDS.register("inspect")
def cmd_inspect(a: argparse.Namespace) -> int:
    """What a checkpoint holds and, with --arch, how it fits (exit 1 when it does not load strictly)."""
    import json

    from evalbench.checkpoints.inspect import format_inspection, inspect_checkpoint, write_rules

    info = inspect_checkpoint(Path(a.checkpoint), arch=a.arch, in_chans=a.in_chans, rules=_load_rules(a),
                              trust_pickle=a.trust_pickle)
    print(json.dumps(info, indent=1) if a.json else format_inspection(info))
    if a.write_rules:
        if not (info.get("proposal") or {}).get("checked"):
            raise EvalbenchError("no checked proposal to write" + ("" if a.arch else " (give --arch)")
                                 + ("; the checkpoint already loads" if (info.get("fit") or {}).get("ok") else ""))
        print(f"evalbench: wrote {write_rules(info, Path(a.write_rules))}", file=sys.stderr)
    return 0 if a.arch is None or info["fit"]["ok"] else 1


@COMMANDS.register("convert")
def cmd_convert(a: argparse.Namespace) -> int:
    from evalbench.checkpoints.convert import convert_checkpoint

    report = convert_checkpoint(Path(a.checkpoint), arch=a.arch, out=Path(a.out), in_chans=a.in_chans,
                                rules=_load_rules(a), trust_pickle=a.trust_pickle)
    print(f"evalbench: wrote {a.out}: {report.loaded} tensors of {a.arch} ({report.layout} layout, candidate "
          f"{report.selected}, {len(report.dropped)} checkpoint tensors dropped)", file=sys.stderr)
    return 0


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint file (.pth, .pt, .ckpt, .tar, .safetensors)")
    p.add_argument("--in-chans", type=int, default=None, choices=[1, 3], help="encoder input channels (default: the arch's)")
    p.add_argument("--select", default=None, help="candidate encoder of a multi-encoder file (teacher, key, target, ...)")
    p.add_argument("--rules", default=None, help="rules file (select, rename, skip_missing, skip_unexpected)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling (runs code from the file): only for a file you trust")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evalbench", description="Benchmark pretrained image encoders (k-NN, linear probe, ...).")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="evaluate a suite (default: the embedded default suite)")
    r.add_argument("suite", nargs="?", help="suite YAML (checkpoints x tasks x protocols x seeds)")
    r.add_argument("--results", default="results", help="results directory (records; artifacts too unless --storage)")
    r.add_argument("--storage", default=None,
                   help="artifact store (checkpoints, features): a path every Ray node sees (default: --results)")
    r.add_argument("--executor", default="ray", choices=["ray", "local"], help="ray (default) or local in-process")
    r.add_argument("--address", default=None, help="Ray cluster address to join (default: embedded local Ray)")
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs for embedded local Ray (default: all)")
    r.add_argument("--dry-run", action="store_true",
                   help="check the suite, the stores and the cluster and show what would run; run nothing, start no Ray")
    r.add_argument("--amp", action="store_true",
                   help="extract features under float16 autocast on CUDA GPUs (a separate identity from fp32 features)")
    r.add_argument("--format", default="github", help="table format: github, latex, html, csv, plain")
    r.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of every checkpoint of the suite (runs code from the files): trusted files only")
    pt = sub.add_parser("pretrain", help="pretrain one encoder from a config YAML (SimCLR, MoCo, BYOL, SimSiam, ...)")
    pt.add_argument("config", help="pretraining config YAML (see examples/pretrain/)")
    pt.add_argument("--storage", default="results", help="artifact store: the checkpoint and its resumable state")
    pt.add_argument("--out", default=None, help="also copy the checkpoint (.safetensors + .json) to this path")
    pt.add_argument("--executor", default=None, choices=["ray", "local"],
                    help="local in-process (default), or ray (the default for a config with workers > 1)")
    pt.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    pt.add_argument("--num-cpus", type=int, default=None, help="CPUs for embedded local Ray")
    sw = sub.add_parser("sweep", help="pretrain every point of a grid and evaluate each (the ablation table)")
    sw.add_argument("grid", help="sweep YAML: base config, grid or points, seeds, evaluate (see examples/sweeps/)")
    sw.add_argument("--results", default="results", help="results directory (records; artifacts too unless --storage)")
    sw.add_argument("--storage", default=None, help="artifact store, a path every Ray node sees (default: --results)")
    sw.add_argument("--executor", default="ray", choices=["ray", "local"])
    sw.add_argument("--address", default=None, help="Ray cluster address to join (default: embedded local Ray)")
    sw.add_argument("--num-cpus", type=int, default=None, help="CPUs for embedded local Ray (default: all)")
    sw.add_argument("--yes", action="store_true", help="run a grid larger than the safety threshold")
    sw.add_argument("--format", default="github", help="table format: github, latex, html, csv, plain")
    t = sub.add_parser("table", help="render the table from stored records")
    t.add_argument("--results", default="results")
    t.add_argument("--storage", default=None,
                   help="the run's artifact store, where per-example predictions are (default: --results)")
    t.add_argument("--format", default="github", help="github, latex, html, csv, plain")
    t.add_argument("--task", default=None)
    t.add_argument("--protocol", default=None)
    t.add_argument("--transfer", action="store_true",
                   help="the transfer matrix: pretraining task -> target task (checkpoints' pretrained_on)")
    t.add_argument("--source", default=None, help="with --transfer: only checkpoints pretrained on this task")
    lb = sub.add_parser("leaderboard", help="write the leaderboard (Markdown, CSV, a static HTML page, plots) or --check it")
    lb.add_argument("--results", default="results", help="results directory (records)")
    lb.add_argument("--storage", default=None,
                    help="artifact store the run used (predictions, features for --tsne; default: --results)")
    lb.add_argument("--suite", default=None, help="only the records of this suite's checkpoints, tasks and protocols")
    lb.add_argument("--out", required=True, help="directory of leaderboard.md, leaderboard.csv, index.html, plots/")
    lb.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 with a unified diff when the files in --out are not what the records give")
    lb.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                    help="PNG + SVG plots beside the leaderboard, shown in the page (default: on)")
    lb.add_argument("--tsne", nargs="+", default=None, metavar="CHECKPOINT",
                    help="also a t-SNE of these checkpoints' test features (by name; needs their features in --storage)")
    dg = sub.add_parser("diff", help="compare two results directories / leaderboard CSVs cell by cell (exit 1 on a move)")
    dg.add_argument("old", help="results directory (with records/) or leaderboard CSV (or a directory holding one)")
    dg.add_argument("new", help="results directory (with records/) or leaderboard CSV (or a directory holding one)")
    dg.add_argument("--tol", type=float, default=0.5,
                    help="largest allowed move: percentage points for top-1 metrics, own units otherwise (default 0.5)")
    dg.add_argument("--format", default="plain", help="plain, github, latex, html, csv")
    dg.add_argument("--all", action="store_true", help="list every cell, not only those that moved, vanished or are new")
    ct = sub.add_parser("check-targets", help="fail (exit 1) when a reference target regressed or has no cell")
    ct.add_argument("targets", help="targets YAML or CSV: checkpoint, task, protocol, metric, minimum, tolerance")
    ct.add_argument("--results", default="results", help="results directory or leaderboard CSV (default: results)")
    ct.add_argument("--format", default="plain", help="plain, github, latex, html, csv")
    ct.add_argument("--all", action="store_true", help="list every target, not only the failing ones")
    li = sub.add_parser("list", help="list tasks, protocols, encoders, loaders or views")
    li.add_argument("what", choices=LISTINGS.names())
    ins = sub.add_parser("inspect", help="show a checkpoint's layout, candidates and fit (--arch); propose rename rules")
    _checkpoint_args(ins)
    ins.add_argument("--arch", default=None, help="architecture to check the fit against (FAMILY:NAME)")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    ins.add_argument("--write-rules", default=None, metavar="FILE", help="write the checked proposal as a rules file")
    cv = sub.add_parser("convert", help="write a checkpoint's mapped encoder weights as safetensors")
    _checkpoint_args(cv)
    cv.add_argument("--arch", required=True, help="architecture (FAMILY:NAME)")
    cv.add_argument("--out", required=True, help="output .safetensors file")
    s = sub.add_parser("splits", help="make a task's split index file (once; then keep it with the task)")
    s.add_argument("task", help="task name or task YAML path")
    s.add_argument("--force", action="store_true")
    su = sub.add_parser("subsets", help="(re)make a task's label-subset file (1%%/10%% class-balanced draws, nested)")
    su.add_argument("task", help="task name or task YAML path")
    su.add_argument("--draws", type=int, default=3, help="draws per fraction (default 3)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return COMMANDS.get(a.command)(a)
    except (EvalbenchError, KeyError, OSError) as e:  # bad input or environment: one paragraph, no traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"evalbench: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalbench: interrupted; records written so far are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
