"""evalbench's k-NN (``knn_predict``, both published settings) against the bare GEMM and faiss, and
variants of its search that were tried and not kept (issue 10).

    .venv/bin/python benchmarks/knn_search.py --threads 1 2 --repeats 3

The setting of benchmarks/run_all.py: cached fashion-mnist small-cnn features (bank = train + val,
60000 x 128; queries = test, 10000; L2-normalised), k = 200 searched once for (k=20, T=0.07) and
(k=200, T=0.1), and run_all's own peers (``bare_gemm``, ``tiled_gemm``, ``faiss_vote``). Also timed:
``knn_predict`` with ``pooled_topk`` in place of ``knn.faiss_topk`` (faiss's BLAS tiles 1024 x 1024
instead of 4096 x 1024, and with t > 1 threads one single-threaded search per 1024-query block, t at
a time in a thread pool, which makes the neighbours independent of t). Measured on 2 shared cores
(load 1.7-2.6), two runs: 1 thread 2.29 s vs knn_predict's 2.35 s (noise level); 2 threads slower in
both (1.58 s vs 1.24 s, 1.78 s vs 1.28 s; more CPU time too), so it was not kept. Also tried, outside
this file: a torch threshold filter (GEMM per 1024 x 1024 tile, per-group maxima, keep only entries
above a lower bound of each query's 200th similarity, one topk at the end): 1.6x the GEMM in CPU time
against faiss's 1.3x at 1 thread, its many small torch ops costing more than faiss's scalar reservoir.
Also timed: ``heap_topk``, torch's GEMM per 1024 x 1024 tile (the fastest GEMM peer) with each tile merged
into per-query heaps by faiss's C++ ``float_minheap_array_t.addn``: 1.58x the GEMM at 1 thread and 1.57x at 2
(06:31 UTC, load 1.4-1.7; evalbench 1.32x / 1.44x in the same run): heaps cost more than faiss's reservoir.
In a scratch prototype (not kept: it needed numba), torch's GEMM tiles with a compiled reservoir scan
(32-wide vectorised maxima, exact per-query reservoirs) took 1.63x / 1.78x: on these features (cosine
similarities packed near 0.99) 30-80% of the 32-wide chunks exceed the running 200th similarity.
Per thread count all sides alternate in one process, best of
--repeats, wall clock (``time.perf_counter``) and this process's CPU time; prints the ratios to the
faster GEMM, the fraction of neighbour indices identical to faiss's (position by position, and as
sets) and of identical predictions, and the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_all  # noqa: E402  (the GEMM and faiss peers of the published table)

from evalbench.protocols import knn  # noqa: E402

SETTINGS = [{"k": 20, "T": 0.07}, {"k": 200, "T": 0.1}]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalbench-bench"


def pooled_topk(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tried variant of knn.faiss_topk: 1024 x 1024 BLAS tiles; with t > 1 torch threads, one
    single-threaded IndexFlatIP search per 1024-query block (faiss's own query tile, so each
    similarity is the same float32 number at any t), t blocks at a time in a thread pool."""
    faiss, cvar = knn.faiss, knn.faiss.cvar
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.contiguous().numpy())
    q, threads, block = queries.contiguous().numpy(), torch.get_num_threads(), 1024
    tiles = cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs
    cvar.distance_compute_blas_query_bs = cvar.distance_compute_blas_database_bs = block

    def part(lo: int) -> tuple[np.ndarray, np.ndarray]:
        faiss.omp_set_num_threads(1)  # this pool thread's OpenMP setting
        return index.search(q[lo : lo + block], k)

    try:
        if threads == 1:
            faiss.omp_set_num_threads(1)
            sims, idx = index.search(q, k)
        else:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(part, range(0, len(q), block)))
            sims, idx = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    finally:
        cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs = tiles
    return torch.from_numpy(sims), torch.from_numpy(idx)


def heap_topk(queries: torch.Tensor, bank: torch.Tensor, k: int, qb: int = 1024, bb: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The second tried variant: torch's GEMM per qb x bb tile (torch's threads), each tile merged into
    per-query heaps by faiss's C++ ``float_minheap_array_t.addn`` (OpenMP over the queries): the GEMM
    of the fastest peer with faiss's own selection code, minus its reservoir."""
    faiss = knn.faiss
    nq = len(queries)
    sims, idx = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k, heaps.val, heaps.ids = nq, k, faiss.swig_ptr(sims), faiss.swig_ptr(idx)
    heaps.heapify()
    bank_t = bank.T
    for qs in range(0, nq, qb):
        q = queries[qs:qs + qb]
        for bs in range(0, len(bank), bb):
            tile = (q @ bank_t[:, bs:bs + bb]).contiguous().numpy()
            heaps.addn(tile.shape[1], faiss.swig_ptr(tile), bs, qs, len(q))
    heaps.reorder()
    return torch.from_numpy(sims), torch.from_numpy(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    z = np.load(CACHE / "fashion-mnist--small-cnn.npz")
    bank_x = torch.from_numpy(np.concatenate([z["x_train"], z["x_val"]]))
    bank_y = torch.from_numpy(np.concatenate([z["y_train"], z["y_val"]])).long()
    query_x = torch.from_numpy(z["x_test"])
    bank, query = F.normalize(bank_x, dim=1), F.normalize(query_x, dim=1)
    c = int(bank_y.max()) + 1
    predict = lambda: knn.knn_predict(bank_x, bank_y, query_x, settings=SETTINGS, num_classes=c)  # noqa: E731

    def predict_with(topk):
        def run() -> dict:
            kept, knn.faiss_topk = knn.faiss_topk, topk
            try:
                return predict()
            finally:
                knn.faiss_topk = kept
        return run

    fns = {"gemm rows": lambda: run_all.bare_gemm(query, bank), "gemm tiles": lambda: run_all.tiled_gemm(query, bank),
           "faiss + vote (peer)": lambda: run_all.faiss_vote(bank_x, bank_y, query_x, SETTINGS, c),
           "evalbench": predict, "evalbench, pooled_topk": predict_with(pooled_topk),
           "evalbench, heap_topk": predict_with(heap_topk)}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        knn.faiss.omp_set_num_threads(threads)
        wall, cpu, out = {n: float("inf") for n in fns}, {n: float("inf") for n in fns}, {}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out[name] = fn()
                wall[name] = min(wall[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], time.process_time() - c0)
        gw, gc = min(wall["gemm rows"], wall["gemm tiles"]), min(cpu["gemm rows"], cpu["gemm tiles"])
        print(f"\n{threads} thread(s), best of {args.repeats}; load average now {os.getloadavg()[0]:.2f}")
        for name in fns:
            print(f"  {name:22s} wall {wall[name]:6.3f} s {wall[name] / gw:5.2f}x GEMM   cpu {cpu[name]:6.3f} s {cpu[name] / gc:5.2f}x")
        index = knn.faiss.IndexFlatIP(bank.shape[1])
        index.add(bank.numpy())
        ref_i = torch.from_numpy(index.search(query.numpy(), 200)[1])
        for name, topk in {"evalbench": knn.faiss_topk, "pooled_topk": pooled_topk, "heap_topk": heap_topk}.items():
            new_i = topk(query, bank, 200)[1]
            same_sets = np.mean([len(np.intersect1d(a, b)) / 200 for a, b in zip(new_i.numpy(), ref_i.numpy())])
            print(f"  {name} neighbours vs faiss IndexFlatIP: identical indices {100 * float((new_i == ref_i).float().mean()):.3f}% "
                  f"(by position), {100 * same_sets:.4f}% (as sets)")
        for name in ("evalbench", "evalbench, pooled_topk", "evalbench, heap_topk"):
            for key, p in out["faiss + vote (peer)"].items():
                print(f"  {name} predictions k={key[0]} T={key[1]:g}: identical to the peer's "
                      f"{100 * float((out[name][key] == p).float().mean()):.3f}%")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
