"""One command for the frozen-feature performance figures (issue 10): evalbench's probes vs their peers.

    .venv/bin/python benchmarks/run_all.py                  # fashion-mnist, 1 and 2 threads (~15 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick          # digits + mnist5k, 1 thread (~1 min)
    .venv/bin/python benchmarks/run_all.py --resnet18       # + 50k x 512 timm resnet18 features (extracted once, cached)
    .venv/bin/python benchmarks/run_all.py --readme-only    # regenerate the README table from the JSON

Writes ``benchmarks/figures.json`` (--json): one entry per figure with its peer, both times, the
speedup (peer s / evalbench s: above 1, evalbench is faster), the accuracy difference, the
target it answers and whether it is met, the thread count, the machine, its load and the date.
Then rewrites the table between the ``figures`` markers in benchmarks/README.md from that JSON.

Features: evalbench's own extraction (``extract_task_features``, random-init encoders), cached
as .npz under --cache so that reruns time only the probes. Each side gets the same float32
arrays. Timings: ``time.perf_counter`` around the whole call, sides alternating, best of
--repeats; torch, BLAS (threadpoolctl) and faiss all limited to the same thread count.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from tabulate import tabulate
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_probes  # noqa: E402  (the same features and sklearn k-NN peer as bench_probes.py)

from evalbench.features.artifact import Features  # noqa: E402
from evalbench.features.extract import COMPILE_MIN_IMAGES  # noqa: E402
from evalbench.protocols import knn  # noqa: E402
from evalbench.protocols.linear import grad_norm, linear_probe, standardise  # noqa: E402
from evalbench.specs.protocol import resolve_protocol  # noqa: E402

HERE = Path(__file__).resolve().parent
CPU = torch.device("cpu")
GRID_45 = [float(v) for v in np.logspace(-6, 0, 45)]  # DINOv2's density (45 values), on the protocol's range
ENCODERS = {
    "small-cnn": {"name": "bench", "arch": "builtin:small-cnn", "init": "random",
                  "preprocessing": {"in_chans": 1, "mean": [0.5], "std": [0.5]}},
    "resnet18": {"name": "bench-r18", "arch": "timm:resnet18", "init": "random",
                 "preprocessing": {"in_chans": 1, "input_size": 64, "mean": [0.5], "std": [0.5]}},
}


# --- features -------------------------------------------------------------------------------------


def cached_features(task: str, encoder: str, cache: Path) -> Features:
    path = cache / f"{task}--{encoder}.npz"
    if not path.exists():
        from evalbench.run.worker import extract_task_features
        from evalbench.specs.checkpoint import parse_checkpoint
        from evalbench.specs.task import resolve_task
        spec = parse_checkpoint(ENCODERS[encoder], where="bench", base_dir=Path("."))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            f = extract_task_features(spec, resolve_task(task), weights_file=None, device=CPU)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, num_classes=f.num_classes, **{f"x_{s}": a for s, a in f.x.items()}, **{f"y_{s}": a for s, a in f.y.items()})
        print(f"[features] {task} / {encoder}: extracted in {time.perf_counter() - t0:.0f}s -> {path}", file=sys.stderr)
    z = np.load(path)
    splits = ("train", "val", "test")
    return Features({s: z[f"x_{s}"] for s in splits}, {s: z[f"y_{s}"] for s in splits}, int(z["num_classes"]))


def sizes(f: Features) -> str:
    return f"{len(f.x['train'])}/{len(f.x['val'])}/{len(f.x['test'])} x {f.dim}"


# --- timing ---------------------------------------------------------------------------------------


def side_by_side(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Run each function repeats times, alternating; (last result, best seconds) per name."""
    out, best = {}, {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return out, best


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- linear ---------------------------------------------------------------------------------------


def sklearn_linear(f: Features, *, grid: list[float], max_iter: int = 500, tol: float = 1e-4) -> dict:
    """The protocol with sklearn lbfgs (warm-started strongest -> weakest, default tol), on the same
    standardised features; the refit's max|grad| is measured like evalbench's (float64)."""
    t = {s: torch.from_numpy(f.x[s]).float() for s in ("train", "val", "test")}
    x_tr, x_val = (a.numpy() for a in standardise(t["train"], t["val"]))
    x_all, x_test = standardise(torch.cat([t["train"], t["val"]]), t["test"])
    y_all = np.concatenate([f.y["train"], f.y["val"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=True)
        curve, fits = {}, {}
        for l2 in sorted(grid, reverse=True):
            clf.set_params(C=1.0 / (l2 * len(x_tr)))
            curve[l2] = float(clf.fit(x_tr, f.y["train"]).score(x_val, f.y["val"]))
            fits[l2] = clf.coef_.copy(), clf.intercept_.copy()
        best = max(curve.values())
        l2 = max(v for v, acc in curve.items() if acc == best)
        clf.coef_, clf.intercept_ = fits[l2]  # the refit starts from the chosen fit, as evalbench's does
        clf.set_params(C=1.0 / (l2 * len(x_all)))
        final = clf.fit(x_all.numpy(), y_all)
    params = (torch.from_numpy(final.coef_.T.astype(np.float64)), torch.from_numpy(final.intercept_.astype(np.float64)))
    g = grad_norm(params, x_all.double(), torch.from_numpy(y_all), l2=l2)
    return {"l2": l2, "curve": curve, "top1": float(final.score(x_test.numpy(), f.y["test"])), "grad_max": g}


def bench_linear(f: Features, task: str, encoder: str, threads: int, repeats: int, sk_repeats: int, *,
                 grid45: bool = True) -> list[dict]:
    params = dict(resolve_protocol("linear").params)
    grid = [float(v) for v in params["l2_grid"]]
    params45 = {**params, "l2_grid": GRID_45}
    ours = lambda p: lambda: linear_probe(f, params=p, seed=0, device=CPU)  # noqa: E731
    res, t = side_by_side({"evalbench": ours(params), "sklearn": lambda: sklearn_linear(f, grid=grid)}, sk_repeats)
    if repeats > sk_repeats:  # evalbench's time is short: more repeats for it alone
        t["evalbench"] = min(t["evalbench"], side_by_side({"evalbench": ours(params)}, repeats - sk_repeats)[1]["evalbench"])
    ev, sk = res["evalbench"], res["sklearn"]
    same_curve = sum(abs(ev.details["val_curve"][f"{k:g}"] - v) < 1e-6 for k, v in sk["curve"].items())  # float32 vs float64 means
    base = {"task": task, "encoder": encoder, "sizes": sizes(f), "threads": threads}
    rows = [
        {**base, "work": "linear, 7-point L2 grid + refit", "evalbench_s": t["evalbench"],
         "peer": "sklearn LogisticRegression lbfgs, warm-started, tol 1e-4", "peer_s": t["sklearn"],
         "acc_evalbench": ev.metrics["top1"], "acc_peer": sk["top1"],
         "target": "speedup >= 5, |diff| <= 0.2 pt, grad_max <= peer's", "target_speedup": 5.0,
         "extra": {"l2": [ev.details["l2"], sk["l2"]], "grad_max": [ev.details["refit_grad_max"], sk["grad_max"]],
                   "val_curve_points_equal": f"{same_curve}/{len(grid)}",
                   "val_curve": [ev.details["val_curve"], {f"{k:g}": v for k, v in sorted(sk["curve"].items())}]}}]
    if grid45:
        r45, t45 = side_by_side({"evalbench": ours(params45)}, 1)
        rows.append({**base, "work": "linear, 45-point L2 grid + refit", "evalbench_s": t45["evalbench"],
                     "peer": "sklearn, 7-point grid (row above)", "peer_s": t["sklearn"],
                     "acc_evalbench": r45["evalbench"].metrics["top1"], "acc_peer": sk["top1"],
                     "target": "faster than the peer's 7-point grid", "target_speedup": 1.0,
                     "extra": {"l2": r45["evalbench"].details["l2"], "grad_max": r45["evalbench"].details["refit_grad_max"]}})
    return rows


# --- k-NN -----------------------------------------------------------------------------------------


def bare_gemm(query: torch.Tensor, bank: torch.Tensor) -> None:
    """All similarities, nothing else: the fastest of two blockings (rows of queries x the whole bank;
    4096 x 1024 tiles, the blocking faiss uses), so the limit is not a badly blocked GEMM."""
    for qs in range(0, len(query), 1024):
        query[qs : qs + 1024] @ bank.T


def tiled_gemm(query: torch.Tensor, bank: torch.Tensor) -> None:
    for qs in range(0, len(query), 4096):
        q = query[qs : qs + 4096]
        for bs in range(0, len(bank), 1024):
            q @ bank[bs : bs + 1024].T


def faiss_vote(bank_x: torch.Tensor, bank_y: torch.Tensor, query_x: torch.Tensor, settings: list[dict], c: int) -> dict:
    """faiss IndexFlatIP (k = the largest k) + the same weighted vote, written directly against faiss, from the
    raw features as knn_predict gets them (L2-normalising them is part of the work on both sides)."""
    import faiss
    bank, query = F.normalize(bank_x, dim=1), F.normalize(query_x, dim=1)
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.numpy())
    sims, idx = index.search(query.numpy(), max(s["k"] for s in settings))
    sims, idx = torch.from_numpy(sims), torch.from_numpy(idx)
    return {(s["k"], s["T"]): knn.weighted_vote(sims[:, : s["k"]], bank_y[idx[:, : s["k"]]], T=s["T"], num_classes=c).argmax(1)
            for s in settings}


def bench_knn(f: Features, task: str, encoder: str, threads: int, repeats: int, with_sklearn: bool) -> list[dict]:
    p = resolve_protocol("knn").params
    settings = [{"k": int(s["k"]), "T": float(s["T"])} for s in p["settings"]]
    bank_x = torch.from_numpy(np.concatenate([f.x["train"], f.x["val"]]))
    bank_y = torch.from_numpy(np.concatenate([f.y["train"], f.y["val"]]))
    query_x, query_y = torch.from_numpy(f.x["test"]), torch.from_numpy(f.y["test"])
    bank, query = F.normalize(bank_x, dim=1), F.normalize(query_x, dim=1)
    ours = lambda engine: lambda: knn.knn_predict(bank_x, bank_y, query_x, settings=settings,  # noqa: E731
                                                  num_classes=f.num_classes, chunk=int(p["chunk_size"]), engine=engine)
    fns = {"evalbench": ours("auto"), "evalbench-torch": ours("torch"), "gemm": lambda: bare_gemm(query, bank),
           "gemm-tiled": lambda: tiled_gemm(query, bank)}
    if knn.faiss is not None:
        fns["faiss"] = lambda: faiss_vote(bank_x, bank_y, query_x, settings, f.num_classes)
    res, t = side_by_side(fns, repeats)
    acc = lambda preds: {f"k{k} T{T:g}": float((v == query_y).float().mean()) for (k, T), v in preds.items()}  # noqa: E731
    base = {"task": task, "encoder": encoder, "sizes": sizes(f), "threads": threads,
            "acc_evalbench": acc(res["evalbench"])}
    gemm = min(t["gemm"], t["gemm-tiled"])
    rows = [{**base, "work": "k-NN, both settings", "evalbench_s": t["evalbench"], "peer": "bare similarity GEMM (no top-k)",
             "peer_s": gemm, "acc_peer": None, "target": "evalbench <= 1.3 x GEMM", "target_speedup": 1 / 1.3,
             "extra": {"gemm_rows_s": t["gemm"], "gemm_tiled_s": t["gemm-tiled"], "engine": "faiss" if knn.faiss else "torch"}},
            {**base, "work": "k-NN, both settings (torch path)", "evalbench_s": t["evalbench-torch"],
             "peer": "bare similarity GEMM (no top-k)", "peer_s": gemm, "acc_peer": None,
             "target": "fallback / GPU path (no target on CPU)", "target_speedup": None,
             "acc_evalbench": acc(res["evalbench-torch"])}]
    if "faiss" in res:
        agree = {f"k{k} T{T:g}": float((res["evalbench"][key] == v).float().mean()) for key, v in res["faiss"].items() for k, T in [key]}
        rows.append({**base, "work": "k-NN, both settings", "evalbench_s": t["evalbench"],
                     "peer": "faiss IndexFlatIP k=200 + the same vote", "peer_s": t["faiss"], "acc_peer": acc(res["faiss"]),
                     "target": "speedup >= 1 (evalbench calls faiss: parity within 5% timing noise)", "target_speedup": 0.95,
                     "extra": {"prediction_agreement": agree}})
    if with_sklearn:
        bx, by, qx = bank_x.numpy(), bank_y.numpy(), query_x.numpy()
        sk = {}
        t0 = time.perf_counter()
        with threadpool_limits(threads):
            for s in settings:
                sk[(s["k"], s["T"])] = torch.from_numpy(bench_probes.sklearn_knn(bx, by, qx, k=s["k"], T=s["T"]))
        rows.append({**base, "work": "k-NN, both settings", "evalbench_s": t["evalbench"],
                     "peer": "sklearn KNeighborsClassifier brute cosine (once per k)", "peer_s": time.perf_counter() - t0,
                     "acc_peer": acc(sk), "target": "(reference)", "target_speedup": None})
    return rows


# --- extraction -----------------------------------------------------------------------------------


def bench_extract(task: str, encoder: str, threads: int, repeats: int, n_images: int) -> dict:
    """evalbench's ``extract_features`` over the task's test images (uint8 source: batching, preprocessing
    and the forward) against a raw forward of the same model over pre-made, preprocessed input tensors,
    in NCHW and in channels_last (the faster one is the peer); same batch size, inference mode."""
    from evalbench.data.base import SubsetSource
    from evalbench.encoders import build_encoder, preprocess
    from evalbench.features.extract import extract_features, inference_module
    from evalbench.specs.checkpoint import parse_checkpoint
    from evalbench.specs.task import load_task, resolve_task

    spec = parse_checkpoint(ENCODERS[encoder], where="bench", base_dir=Path("."))
    test = load_task(resolve_task(task)).test
    source = SubsetSource(test, np.arange(min(n_images, len(test))))
    torch.manual_seed(0)
    enc = build_encoder(spec.arch, in_chans=spec.data.in_chans).eval()
    batch = 256
    images = torch.stack([source[i][0] for i in range(len(source))])
    x_nchw = torch.cat([preprocess(images[i:i + batch], spec.data) for i in range(0, len(images), batch)])
    x_nhwc = x_nchw.contiguous(memory_format=torch.channels_last)

    # the eager peers switch their model's memory format: on a copy, since converting the weights of the
    # encoder that extract_features uses gives them new storages and so a recompile inside its timed call
    eager = copy.deepcopy(enc)

    def raw(x: torch.Tensor, fmt: torch.memory_format) -> np.ndarray:
        eager.model.to(memory_format=fmt)
        with torch.inference_mode():
            return torch.cat([eager(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()

    compiled: list = []  # compiled once, outside the timed calls (evalbench's time includes its compiling)

    def raw_compiled() -> np.ndarray:  # what extract_features runs on CPU, over the pre-made tensors
        if not compiled:
            enc.model.to(memory_format=torch.channels_last)
            compiled.append(inference_module(enc.eval(), x_nhwc[:batch]))
        fwd = compiled[0]
        with torch.inference_mode():
            return torch.cat([fwd(x_nhwc[i:i + batch]) for i in range(0, len(x_nhwc), batch)]).numpy()

    fns = {"evalbench": lambda: extract_features(enc, source, cfg=spec.data, device=CPU, batch_size=batch),
           "raw-nchw": lambda: raw(x_nchw, torch.contiguous_format), "raw-nhwc": lambda: raw(x_nhwc, torch.channels_last),
           "raw-compiled": raw_compiled}
    raw_compiled()  # compile before timing
    res, t = side_by_side(fns, repeats)
    peer = min(t["raw-nchw"], t["raw-nhwc"], t["raw-compiled"])
    return {"task": task, "encoder": encoder, "sizes": f"{len(source)} test images -> {spec.data.input_size or 'native'} px",
            "threads": threads, "work": "extraction (uint8 source -> features)", "evalbench_s": t["evalbench"],
            "peer": "raw forward over pre-made input tensors (the fastest of NCHW / channels_last / compiled)", "peer_s": peer,
            "acc_evalbench": None, "acc_peer": None, "target": "images/s >= 0.9 x the raw forward's", "target_speedup": 0.9,
            "extra": {"images_per_s": {k: round(len(source) / v, 1) for k, v in t.items()},
                      "max_abs_diff_vs_raw_nchw": float(np.abs(res["evalbench"] - res["raw-nchw"]).max())}}


# --- report ---------------------------------------------------------------------------------------


def finish(row: dict, meta: dict) -> dict:
    row["speedup"] = row["peer_s"] / row["evalbench_s"]
    a, b = row["acc_evalbench"], row["acc_peer"]
    if isinstance(a, dict) and isinstance(b, dict):
        row["acc_diff_pts"] = {k: round(100 * (a[k] - b[k]), 2) for k in a}
    elif a is not None and b is not None:
        row["acc_diff_pts"] = round(100 * (a - b), 2)
    else:
        row["acc_diff_pts"] = None
    need = row.pop("target_speedup")
    met = None if need is None else row["speedup"] >= need
    if met and row["work"].startswith("linear, 7"):
        g = row["extra"]["grad_max"]
        met = abs(row["acc_diff_pts"]) <= 0.2 and g[0] <= g[1]
    row["met"] = met
    return {**row, **meta}


def fmt_acc(a: Any) -> str:
    if a is None:
        return "—"
    if isinstance(a, dict):
        return " / ".join(f"{100 * v:.2f}" for v in a.values())
    return f"{100 * a:.2f}"


def markdown(doc: dict) -> str:
    head = ["work", "task (train/val/test x dim)", "threads", "evalbench s", "peer", "peer s", "speedup",
            "evalbench top-1", "peer top-1", "target", "met"]
    body = [[r["work"], f"{r['task']} / {r['encoder']} ({r['sizes']})", r["threads"], f"{r['evalbench_s']:.2f}", r["peer"],
             f"{r['peer_s']:.2f}", f"{r['speedup']:.2f}x", fmt_acc(r["acc_evalbench"]), fmt_acc(r["acc_peer"]),
             r["target"].replace("|", "\\|"), {True: "yes", False: "**no**", None: "—"}[r["met"]]] for r in doc["figures"]]
    m = doc["meta"]
    lines = [f"Generated by `{m['command']}` on {m['date']}; {m['machine']}; load average (1 min) "
             f"{m['load_before']} before, {m['load_after']} after. Speedup = peer s / evalbench s (above 1: evalbench "
             f"is faster). k-NN top-1 is given for k=20 T=0.07 / k=200 T=0.1.", "",
             tabulate(body, headers=head, tablefmt="github", disable_numparse=True)]
    return "\n".join(lines)


def exponent(rows: list[dict], x: str, y: str) -> str:
    """Growth exponent b of y ~ x^b between the smallest and the largest size (1: linear)."""
    a, z = rows[0], rows[-1]
    return f"{np.log(z[y] / a[y]) / np.log(z[x] / a[x]):.2f}"


SCALE_TABLES = {  # key -> (title, size column, [(header, field or function)], the timed field)
    "knn_n": ("k-NN (faiss, both settings) vs bank size N: 1000 queries, D = 128, random unit vectors", "n",
              [("N", "n"), ("GFLOP", lambda r: f"{r['gflop']:.1f}"), ("k-NN s", lambda r: f"{r['knn_s']:.2f}"),
               ("GEMM s", lambda r: f"{r['gemm_s']:.2f}"), ("k-NN / GEMM", lambda r: f"{r['knn_s'] / r['gemm_s']:.2f}"),
               ("bank MiB", lambda r: f"{r['bank_mib']:.0f}"), ("peak MiB above start", lambda r: f"{r['knn_peak_mib']:.0f}")], "knn_s"),
    "knn_d": ("k-NN vs feature dim D: 1000 queries, N = 160000", "d", None, "knn_s"),
    "linear_n": ("Linear probe, one fit (l2 = 1e-4 from zero, to max-abs gradient 1e-6) vs N: fashion-mnist small-cnn features, "
                 "D = 128, 10 classes", "n",
                 [("N", "n"), ("D", "d"), ("fit s", lambda r: f"{r['fit_s']:.2f}"), ("Newton steps", "newton"), ("CG steps", "cg"),
                  ("preconditioner", "preconditioner"), ("data MiB (X, X^T)", lambda r: f"{r['data_mib']:.0f}"),
                  ("peak MiB above start", lambda r: f"{r['peak_mib']:.0f}")], "fit_s"),
    "linear_d": ("Linear probe, one fit vs D: the first D resnet18 (64 px) feature columns, N = 27500", "d", None, "fit_s"),
    "hv_n": ("One Hessian-vector product (= one CG step: two C x N x (D+1) GEMMs) vs N: random data, D = 512, C = 10", "n",
             [("N", "n"), ("GFLOP", lambda r: f"{r['gflop']:.2f}"), ("s", lambda r: f"{r['hv_s']:.3f}"),
              ("GFLOP/s", lambda r: f"{r['gflop'] / r['hv_s']:.0f}"), ("data MiB", lambda r: f"{r['data_mib']:.0f}")], "hv_s"),
    "extract_n": ("Extraction (builtin:small-cnn, 28 px, batch 256) vs images N", "n",
                  [("N", "n"), ("s", lambda r: f"{r['extract_s']:.2f}"), ("images/s", lambda r: f"{r['images_per_s']:.0f}"),
                   ("output MiB", lambda r: f"{r['output_mib']:.1f}"), ("peak MiB above start", lambda r: f"{r['peak_mib']:.0f}")],
                  "extract_s"),
}
SCALE_TABLES["knn_d"] = (SCALE_TABLES["knn_d"][0], "d", [("D", "d")] + SCALE_TABLES["knn_n"][2][1:], "knn_s")
SCALE_TABLES["linear_d"] = (SCALE_TABLES["linear_d"][0], "d", SCALE_TABLES["linear_n"][2], "fit_s")


def e2e_markdown(e: dict) -> str:
    """The default run's evaluation: wall time against the 45 s target, and seconds per stage inside the workers."""
    met = "yes" if e["wall_s"] <= 45 else "**no**"
    head = (f"### End to end: the default run's evaluation (generated, {e['date']}; {e['cpus']} CPUs; load average "
            f"{e['load_before']} before, {e['load_after']} after)\n\n"
            f"`evalbench run` on a fresh store holding only the trained checkpoints ({e['checkpoints_linked']} linked, "
            f"{e['pretrain_stages_run']} pretrain stages run): **{e['wall_s']} s wall** for {e['records']} records "
            f"(target <= 45 s: {met}). Seconds inside the workers (2 run at once), per stage and task:")
    body = [[k, f"{v:.1f}"] for k, v in e["per_kind_task_s"].items()] + [[f"**{k} (all tasks)**", f"{v:.1f}"] for k, v in e["per_kind_s"].items()]
    probes = [[k, f"{v:.1f}"] for k, v in e["per_probe_task_s"].items()]
    return "\n".join([head, "", tabulate(body, headers=["stage", "s"], tablefmt="github", disable_numparse=True), "",
                      tabulate(probes, headers=["probe", "s"], tablefmt="github", disable_numparse=True)])


def scale_markdown(sc: dict) -> str:
    lines = [f"### Scale study (generated: `{sc['command']}` on {sc['date']}; {sc['threads']} thread; load average "
             f"{sc['load_before']} before, {sc['load_after']} after)"]
    for key, (title, size, cols, timed) in SCALE_TABLES.items():
        rows = sc["rows"].get(key)
        if not rows:
            continue
        body = [[(c(r) if callable(c) else r[c]) for _, c in cols] for r in rows]
        lines += ["", f"*{title}*: time grows as {size.upper()}^{exponent(rows, size, timed)} between the smallest and "
                  "the largest size.", "", tabulate(body, headers=[h for h, _ in cols], tablefmt="github", disable_numparse=True)]
    return "\n".join(lines)


def write_readme(doc: dict, readme: Path) -> None:
    text = readme.read_text()
    start, end = "<!-- figures:begin (generated by benchmarks/run_all.py; do not edit) -->", "<!-- figures:end -->"
    body = markdown(doc) + (f"\n\n{e2e_markdown(doc['e2e'])}" if doc.get("e2e") else "") + \
        (f"\n\n{scale_markdown(doc['scale'])}" if doc.get("scale") else "")
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits and mnist5k only, 1 thread")
    ap.add_argument("--tasks", nargs="+", help="override the task list (default fashion-mnist)")
    ap.add_argument("--threads", nargs="+", type=int, help="thread counts to measure (default 1 2; --quick: 1)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many (k-NN and evalbench's linear; default 3)")
    ap.add_argument("--sk-repeats", type=int, default=1, help="best of this many for the sklearn linear peer (default 1)")
    ap.add_argument("--resnet18", action="store_true",
                    help="also the 7-point linear probe on timm resnet18 features (512-d; every thread count, evalbench best of 2, sklearn best of 1; its extraction at the first: ~10 min)")
    ap.add_argument("--sklearn-knn", action="store_true", help="also time sklearn's brute-force k-NN (slow)")
    ap.add_argument("--extract-images", type=int, default=8000,
                    help="test images timed in the extraction rows (small-cnn at 28 px; resnet18 at 64 px gets a quarter, "
                         "but at least COMPILE_MIN_IMAGES = 2048, so both rows run the compiled forward)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalbench-bench")
    ap.add_argument("--json", type=Path, default=HERE / "figures.json")
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--readme-only", action="store_true", help="regenerate the README table from --json and stop")
    ap.add_argument("--scale", action="store_true",
                    help="also the scale study (benchmarks/scale.py: k-NN, linear, extraction at 4 sizes of N and D; ~5 min)")
    ap.add_argument("--e2e-store", type=Path,
                    help="also time the default run's evaluation alone (benchmarks/e2e.py) from this earlier run's store")
    ap.add_argument("--scale-only", action="store_true",
                    help="run only the scale study and replace the \"scale\" entry of --json (the other figures stay)")
    args = ap.parse_args(argv)
    if args.readme_only:
        write_readme(json.loads(args.json.read_text()), args.readme)
        return 0
    if args.scale_only:
        import scale
        doc = json.loads(args.json.read_text())
        doc["scale"] = {**scale.run(1, args.cache), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "command": "benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        args.json.write_text(json.dumps(doc, indent=1, default=str))
        write_readme(doc, args.readme)
        return 0
    tasks = args.tasks or (["digits", "mnist5k"] if args.quick else ["fashion-mnist"])
    threads = args.threads or ([1] if args.quick else [1, 2])
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": date, "machine": bench_probes.machine().split(", torch")[0]}
    doc = {"meta": {**meta, "command": "benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": bench_probes.machine(), "faiss": getattr(knn.faiss, "__version__", None), "load_before": load()},
           "figures": []}
    jobs = [(t, "small-cnn") for t in tasks] + ([("fashion-mnist", "resnet18")] if args.resnet18 else [])
    feats = {job: cached_features(*job, args.cache) for job in jobs}
    for n in threads:
        torch.set_num_threads(n)
        with threadpool_limits(n):
            for (task, enc), f in feats.items():
                print(f"[{task} / {enc}] {sizes(f)}, {n} thread(s), load {load()}", file=sys.stderr)
                if enc == "small-cnn":
                    rows = bench_linear(f, task, enc, n, args.repeats, args.sk_repeats)
                    rows += bench_knn(f, task, enc, n, args.repeats, args.sklearn_knn)
                else:
                    rows = bench_linear(f, task, enc, n, min(args.repeats, 2), 1, grid45=False)  # best of 2: one 40 s sample moved 15% with the host
                if enc == "small-cnn" or n == threads[0]:
                    count = args.extract_images if enc == "small-cnn" else max(COMPILE_MIN_IMAGES, args.extract_images // 4)
                    rows.append(bench_extract(task, enc, n, args.repeats, count))
                for r in rows:
                    doc["figures"].append(finish(r, {**meta, "load": load()}))
                    print(f"  {r['work']}: evalbench {r['evalbench_s']:.2f}s vs {r['peer']} {r['peer_s']:.2f}s "
                          f"({r['speedup']:.2f}x) met={r['met']}", file=sys.stderr)
    if args.e2e_store:
        import e2e
        print("[e2e] the default run's evaluation, fresh store with the trained checkpoints", file=sys.stderr)
        doc["e2e"] = {**e2e.run(args.e2e_store), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        print(f"  e2e: {doc['e2e']['wall_s']} s wall", file=sys.stderr)
    if args.scale:
        import scale
        with threadpool_limits(1):
            doc["scale"] = {**scale.run(1, args.cache), "date": date, "command": doc["meta"]["command"]}
    doc["meta"]["load_after"] = load()
    args.json.write_text(json.dumps(doc, indent=1, default=str))
    write_readme(doc, args.readme)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
