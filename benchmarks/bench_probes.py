"""Benchmark evalbench's k-NN and linear probes against scikit-learn on identical real features.

    python benchmarks/bench_probes.py            # digits, mnist5k, fashion-mnist (if installed)
    python benchmarks/bench_probes.py --quick    # digits, mnist5k only

Features come from evalbench's own extraction (random-init builtin:small-cnn, 128-d, no
cache), so both sides see the same float32 arrays. For each task:

* k-NN (protocols/knn.yaml settings; bank = train + val, queries = test): evalbench's
  ``knn_predict`` vs ``KNeighborsClassifier(algorithm="brute", metric="cosine")`` with the
  callable weight exp((1 - d) / T), which is exp(sim / T) because d = 1 - cosine similarity.
  One row per setting (each side timed on that setting alone) plus a row for both settings
  at once, which is what ``knn_probe`` does: one top-k pass with the largest k.
* Linear (protocols/linear.yaml l2_grid): ``linear_probe`` (standardise, L2 chosen on val,
  refit on train + val, test top-1) vs the same procedure with
  ``LogisticRegression(solver="lbfgs", C=1 / (l2 * n), max_iter=--sk-max-iter)`` on the same standardised features
  (evalbench's ``standardise``), strongest L2 first with warm starts as evalbench does, ties
  to the stronger L2.

Times are the best of --repeats (k-NN, default 3) / --linear-repeats (default 1) runs, with
time.perf_counter and default thread settings.
speedup = sklearn seconds / evalbench seconds (> 1: evalbench is faster).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from tabulate import tabulate

from evalbench.core.errors import EvalbenchError
from evalbench.features.artifact import Features
from evalbench.protocols.knn import knn_predict
from evalbench.protocols.linear import linear_probe, standardise
from evalbench.run.worker import extract_task_features
from evalbench.specs.checkpoint import parse_checkpoint
from evalbench.specs.protocol import resolve_protocol
from evalbench.specs.task import resolve_task

CPU = torch.device("cpu")
CHECKPOINT = {"name": "bench", "arch": "builtin:small-cnn", "init": "random",
              "preprocessing": {"in_chans": 1, "mean": [0.5], "std": [0.5]}}
TASKS, QUICK_TASKS = ("digits", "mnist5k", "fashion-mnist"), ("digits", "mnist5k")


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """(result of the last call, best wall time in seconds)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def load_features(task: str) -> Features:
    spec = parse_checkpoint(CHECKPOINT, where="bench", base_dir=Path("."))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "NumPy array is not writable" (memory-mapped data)
        return extract_task_features(spec, resolve_task(task), weights_file=None, device=CPU)


# --- k-NN -----------------------------------------------------------------------------------------


def sklearn_knn(bank_x: np.ndarray, bank_y: np.ndarray, query_x: np.ndarray, *, k: int, T: float) -> np.ndarray:
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine",
                               weights=lambda d: np.exp((1.0 - d) / T))
    return clf.fit(bank_x, bank_y).predict(query_x)


def bench_knn(f: Features, params: dict, repeats: int) -> tuple[list[dict], list[str]]:
    bank_x = np.concatenate([f.x["train"], f.x["val"]])
    bank_y = np.concatenate([f.y["train"], f.y["val"]])
    query_x, query_y = f.x["test"], f.y["test"]
    tb_x, tb_y, tq_x = torch.from_numpy(bank_x), torch.from_numpy(bank_y), torch.from_numpy(query_x)
    chunk = int(params.get("chunk_size", 1024))
    settings = [{"k": int(s["k"]), "T": float(s["T"])} for s in params["settings"]]

    def ours(ss: list[dict]) -> dict:
        return knn_predict(tb_x, tb_y, tq_x, settings=ss, num_classes=f.num_classes, chunk=chunk)

    rows, notes, t_ours_each, t_sk_each = [], [], [], []
    for s in settings:
        k, T = s["k"], s["T"]
        preds, t_ours = best_of(lambda: ours([s]), repeats)
        p_ours = preds[(k, T)].numpy()
        p_sk, t_sk = best_of(lambda: sklearn_knn(bank_x, bank_y, query_x, k=k, T=T), repeats)
        t_ours_each.append(t_ours)
        t_sk_each.append(t_sk)
        acc_ours, acc_sk = float((p_ours == query_y).mean()), float((p_sk == query_y).mean())
        rows.append(dict(method=f"knn k={k} T={T:g}", acc_ours=acc_ours, acc_sk=acc_sk, t_ours=t_ours, t_sk=t_sk))
        agree = float((p_ours == p_sk).mean())
        notes.append(f"knn k={k} T={T:g}: predictions agree on {agree:.2%} of {len(p_ours)} queries")
    _, t_both = best_of(lambda: ours(settings), repeats)
    rows.append(dict(method="knn, both settings (as knn_probe)", acc_ours=None, acc_sk=None,
                     t_ours=t_both, t_sk=sum(t_sk_each)))
    return rows, notes


# --- linear ---------------------------------------------------------------------------------------


def sklearn_linear(f: Features, *, grid: list[float], max_iter: int, tol: float) -> tuple[float, dict[float, float], float, int]:
    """The linear protocol with sklearn on evalbench-standardised features: (l2, val curve, test top-1, warnings)."""
    t = {s: torch.from_numpy(f.x[s]).float() for s in ("train", "val", "test")}
    x_tr, x_val = (a.numpy() for a in standardise(t["train"], t["val"]))
    x_all, x_test = (a.numpy() for a in standardise(torch.cat([t["train"], t["val"]]), t["test"]))
    y_all = np.concatenate([f.y["train"], f.y["val"]])
    n_warn = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=True)
        curve: dict[float, float] = {}
        for l2 in sorted(grid, reverse=True):  # strongest first, warm-started, as select_l2
            clf.set_params(C=1.0 / (l2 * len(x_tr)))
            curve[l2] = float(clf.fit(x_tr, f.y["train"]).score(x_val, f.y["val"]))
        best = max(curve.values())
        l2 = max(v for v, acc in curve.items() if acc == best)  # ties: the stronger L2
        final = LogisticRegression(solver="lbfgs", C=1.0 / (l2 * len(x_all)), max_iter=max_iter, tol=tol).fit(x_all, y_all)
        n_warn = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return l2, curve, float(final.score(x_test, f.y["test"])), n_warn


def bench_linear(f: Features, params: dict, repeats: int, *, sk_tol: float, sk_max_iter: int) -> tuple[list[dict], list[str]]:
    grid, max_iter = [float(v) for v in params["l2_grid"]], sk_max_iter  # evalbench's max_iter counts Newton steps
    res, t_ours = best_of(lambda: linear_probe(f, params=params, seed=0, device=CPU), repeats)
    (l2_sk, curve_sk, acc_sk, n_warn), t_sk = best_of(lambda: sklearn_linear(f, grid=grid, max_iter=max_iter, tol=sk_tol), repeats)
    l2_ours = float(res.details["l2"])
    curve_ours = {float(k): v for k, v in res.details["val_curve"].items()}
    fmt = lambda c: ", ".join(f"{k:g}: {v:.3f}" for k, v in sorted(c.items()))  # noqa: E731
    notes = [
        f"linear: chosen l2 evalbench {l2_ours:g}, sklearn {l2_sk:g}",
        f"linear: val curve evalbench {{{fmt(curve_ours)}}}",
        f"linear: val curve sklearn   {{{fmt(curve_sk)}}}",
        f"linear: sklearn ConvergenceWarnings in the last run: {n_warn} (max_iter={max_iter}, tol={sk_tol:g})",
    ]
    row = dict(method=f"linear (l2 evalbench {l2_ours:g} / sklearn {l2_sk:g})", acc_ours=float(res.metrics["top1"]),
               acc_sk=acc_sk, t_ours=t_ours, t_sk=t_sk)
    return [row], notes


# --- report ---------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    pct = lambda a: "—" if a is None else f"{100 * a:.2f}"  # noqa: E731

    def diff(r: dict) -> str:
        if r["acc_ours"] is None:
            return "—"
        d = 100 * (r["acc_ours"] - r["acc_sk"])  # evalbench's accuracy is a float32 mean: no "-0.00"
        return f"{0.0 if abs(d) < 5e-3 else d:+.2f}"

    body = [[r["task"], r["method"], pct(r["acc_ours"]), pct(r["acc_sk"]), diff(r),
             f"{r['t_ours']:.3f}", f"{r['t_sk']:.3f}", f"{r['t_sk'] / r['t_ours']:.1f}x"] for r in rows]
    head = ["task", "method", "evalbench acc", "sklearn acc", "diff (points)", "evalbench s", "sklearn s", "speedup"]
    return tabulate(body, headers=head, tablefmt="github", disable_numparse=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"sklearn {sklearn.__version__}, numpy {np.__version__}, Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits and mnist5k only")
    ap.add_argument("--repeats", type=int, default=3, help="k-NN timing: best of this many runs (default 3)")
    ap.add_argument("--linear-repeats", type=int, default=1,
                    help="linear timing: best of this many runs (default 1: the fashion-mnist sweep takes ~1 min a side)")
    ap.add_argument("--tasks", nargs="+", help="override the task list")
    ap.add_argument("--sk-tol", type=float, default=1e-4,
                    help="LogisticRegression tol (default 1e-4, sklearn's own default); 1e-8 makes sklearn converge "
                         "as far as evalbench does at weak L2")
    ap.add_argument("--sk-max-iter", type=int, default=500, help="LogisticRegression max_iter (lbfgs iterations; default 500)")
    ap.add_argument("--json", type=Path, help="also write the rows and notes here")
    args = ap.parse_args(argv)
    tasks = args.tasks or (QUICK_TASKS if args.quick else TASKS)
    knn_params, linear_params = resolve_protocol("knn").params, resolve_protocol("linear").params

    rows, notes, skipped = [], [], []
    for task in tasks:
        try:
            t0 = time.perf_counter()
            f = load_features(task)
        except EvalbenchError as e:
            if task in TASKS[len(QUICK_TASKS):] and not args.tasks:
                skipped.append(f"{task}: {e}")
                print(f"[skip] {task}: {e}", file=sys.stderr)
                continue
            raise
        sizes = "/".join(str(len(f.x[s])) for s in ("train", "val", "test"))
        print(f"[{task}] train/val/test {sizes}, dim {f.dim}, features in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        for name, run in (("knn", lambda: bench_knn(f, knn_params, args.repeats)),
                          ("linear", lambda: bench_linear(f, linear_params, args.linear_repeats, sk_tol=args.sk_tol, sk_max_iter=args.sk_max_iter))):
            t0 = time.perf_counter()
            r, n = run()
            rows += [{"task": task, **x} for x in r]
            notes += [f"{task}: {x}" for x in n]
            print(f"[{task}] {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"\n{stamp}; {machine()}; best of {args.repeats} (k-NN) / {args.linear_repeats} (linear); sklearn LogisticRegression tol={args.sk_tol:g}\n")
    print(table(rows))
    print()
    for n in notes + [f"skipped {s}" for s in skipped]:
        print(f"- {n}")
    if args.json:
        args.json.write_text(json.dumps({"date": stamp, "machine": machine(), "repeats": args.repeats, "linear_repeats": args.linear_repeats, "sk_tol": args.sk_tol,
                                         "rows": rows, "notes": notes, "skipped": skipped}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
