"""Scale study (issue 10): how time and memory of k-NN, the linear probe and extraction grow with N and D.

    .venv/bin/python benchmarks/run_all.py --scale          # runs this and writes its figures into figures.json ("scale")
    .venv/bin/python benchmarks/scale.py --threads 1        # the same, alone (prints JSON)

Four sizes per axis, each timed once (k-NN and its GEMM: best of 2, alternating) in this process (time.perf_counter around the call) with the
resident-memory peak above the process's level before the call (a sampler thread reading
/proc/self/statm every 2 ms: a lower bound on short-lived peaks, shown in MiB).

* k-NN: ``knn_predict`` (both published settings: faiss on CPU) and the bare similarity GEMM on random
  unit vectors (the search cost does not depend on the values), 1000 queries; N (bank) at D = 128 and
  D at N = 160k.
* Linear: one Newton-CG fit (l2 = 1e-4, from zero, to max|grad| <= 1e-6) on real features: N rows of
  the fashion-mnist small-cnn features (128-d), and the first D columns of the resnet18 features (64 px,
  512-d) on 27500 rows; plus the time of one Hessian-vector product (the unit of the solver's work, two
  (C x N x D) GEMMs) on random data of N up to 880k x 512 (1.8 GB).
* Extraction: ``extract_features`` of builtin:small-cnn at 28 px over N fashion-mnist test images
  (time per image; memory: the output array + a few batches, independent of N).

The README's scale section extrapolates from these to ImageNet-sized features; the arithmetic is there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evalbench.protocols import knn  # noqa: E402
from evalbench.protocols import linear  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
KNN_SETTINGS = [{"k": 20, "T": 0.07}, {"k": 200, "T": 0.1}]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak resident MiB above the level before the call)."""
    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    stop.set()
    th.join()
    peak[0] = max(peak[0], rss())
    return out, secs, max(0, peak[0] - base) / 2**20


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def knn_point(n: int, d: int, queries: int = 1000) -> dict:
    bank, q = unit(n, d, 0), unit(queries, d, 1)
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))

    def gemm() -> None:
        for s in range(0, len(q), 4096):
            for b in range(0, n, 1024):
                q[s:s + 4096] @ bank[b:b + 1024].T

    run = lambda: knn.knn_predict(bank, y, q, settings=KNN_SETTINGS, num_classes=10)  # noqa: E731
    _, t_g, _ = measured(gemm)
    _, t_k, m_k = measured(run)
    t_g, t_k = min(t_g, measured(gemm)[1]), min(t_k, measured(run)[1])  # best of 2, alternating
    return {"n": n, "d": d, "queries": queries, "knn_s": t_k, "gemm_s": t_g, "knn_peak_mib": m_k,
            "bank_mib": n * d * 4 / 2**20, "gflop": 2 * queries * n * d / 1e9}


@contextmanager
def counting_cg() -> Iterator[dict[str, int]]:
    """Counts of protocols/linear.py's Newton steps ("newton") and CG steps ("cg") made inside the block
    (its conjugate_gradient wrapped, restored on exit)."""
    counts = {"cg": 0, "newton": 0}
    orig = linear.conjugate_gradient

    def counting(*a: Any, **k: Any) -> tuple[torch.Tensor, int]:
        d, s = orig(*a, **k)
        counts["cg"] += s
        counts["newton"] += 1
        return d, s

    linear.conjugate_gradient = counting
    try:
        yield counts
    finally:
        linear.conjugate_gradient = orig


def linear_point(x: torch.Tensor, y: torch.Tensor, c: int) -> dict:
    """One fit l2 = 1e-4 from zero; its time, Newton and CG steps, the path of the preconditioner."""
    with counting_cg() as counts:
        (xs,) = linear.standardise(x)
        (_, gmax, _), secs, mib = measured(lambda: linear.solve(linear.LogReg(xs, y, c), l2=1e-4, max_iter=100, tol=1e-6, init=None))
    n, d = x.shape
    return {"n": n, "d": d, "classes": c, "fit_s": secs, "peak_mib": mib, "grad_max": gmax, **counts,
            "preconditioner": "full Hessian" if c * (d + 1) <= linear.FULL_HESSIAN_MAX else "per-class blocks", "data_mib": 2 * n * (d + 1) * 4 / 2**20}


def hv_point(n: int, d: int, c: int = 10, repeats: int = 3) -> dict:
    """Seconds per Hessian-vector product (the CG step's cost) on random data."""
    g = torch.Generator().manual_seed(0)
    prob = linear.LogReg(torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g), c)
    theta = 0.01 * torch.randn(c, d + 1, generator=g)
    P = prob.loss_grad(theta, 1e-4)[2]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        prob.hess_vec(P, theta, 1e-4)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "d": d, "classes": c, "hv_s": best, "gflop": 4 * n * (d + 1) * c / 1e9,
            "data_mib": 2 * n * (d + 1) * 4 / 2**20}


def extract_point(n: int) -> dict:
    from evalbench.data.base import SubsetSource
    from evalbench.encoders import build_encoder
    from evalbench.features.extract import extract_features
    from evalbench.specs.checkpoint import parse_checkpoint
    from evalbench.specs.task import load_task, resolve_task
    import run_all

    spec = parse_checkpoint(run_all.ENCODERS["small-cnn"], where="bench", base_dir=Path("."))
    test = load_task(resolve_task("fashion-mnist")).test
    src = SubsetSource(test, np.arange(n))
    torch.manual_seed(0)
    enc = build_encoder(spec.arch, in_chans=spec.data.in_chans)
    _, secs, mib = measured(lambda: extract_features(enc, src, cfg=spec.data, device=torch.device("cpu")))
    return {"n": n, "d": enc.num_features, "extract_s": secs, "images_per_s": n / secs, "peak_mib": mib,
            "output_mib": n * enc.num_features * 4 / 2**20}


def run(threads: int, cache: Path, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"threads": threads, "load_before": round(os.getloadavg()[0], 2)}
    rows: dict[str, list] = {}
    rows["knn_n"] = [knn_point(n, 128) for n in (80_000, 160_000, 320_000, 640_000)]
    log(f"[scale] knn_n {rows['knn_n']}")
    rows["knn_d"] = [knn_point(160_000, d) for d in (64, 128, 256, 512)]
    log(f"[scale] knn_d {rows['knn_d']}")
    z = np.load(cache / "fashion-mnist--small-cnn.npz")
    x, y = torch.from_numpy(z["x_train"]), torch.from_numpy(z["y_train"]).long()
    rows["linear_n"] = [linear_point(x[:n], y[:n], 10) for n in (6875, 13750, 27500, 55000)]
    log(f"[scale] linear_n {rows['linear_n']}")
    r18 = cache / "fashion-mnist--resnet18.npz"
    if r18.exists():
        z = np.load(r18)
        x, y = torch.from_numpy(z["x_train"][:27500]), torch.from_numpy(z["y_train"][:27500]).long()
        rows["linear_d"] = [linear_point(x[:, :d].contiguous(), y, 10) for d in (64, 128, 256, 512)]
        log(f"[scale] linear_d {rows['linear_d']}")
    rows["hv_n"] = [hv_point(n, 512) for n in (110_000, 220_000, 440_000, 880_000)]
    log(f"[scale] hv_n {rows['hv_n']}")
    rows["extract_n"] = [extract_point(n) for n in (1000, 2000, 4000, 8000)]
    log(f"[scale] extract_n {rows['extract_n']}")
    out["rows"] = rows
    out["load_after"] = round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalbench-bench")
    args = ap.parse_args()
    print(json.dumps(run(args.threads, args.cache), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
