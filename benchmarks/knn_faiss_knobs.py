"""faiss IndexFlatIP's tunables against the bare GEMM (issue 10, the k-NN target): a record of what was tried.

    .venv/bin/python benchmarks/knn_faiss_knobs.py            # 1 thread, best of 2, sides alternating

On the cached fashion-mnist small-cnn features of benchmarks/run_all.py (10000 queries x 60000 bank x
128, L2-normalised, k = 200): the bare similarity GEMM in two blockings, and faiss's search with its
BLAS tile sizes (``faiss.cvar.distance_compute_blas_query_bs`` / ``_database_bs``) and its selection
(reservoir from k >= ``distance_compute_min_k_reservoir`` = 100, else heaps) varied. Prints seconds, the
ratio to the faster GEMM, and how many neighbour indices each setting shares with the defaults (another
tiling sums the inner products in another order: float32 rounding reorders near-ties).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

K = 200
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalbench-bench"


def main() -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    z = np.load(CACHE / "fashion-mnist--small-cnn.npz")
    bank = F.normalize(torch.from_numpy(np.concatenate([z["x_train"], z["x_val"]])), dim=1)
    q = F.normalize(torch.from_numpy(z["x_test"]), dim=1)
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.numpy())

    def gemm_rows() -> None:
        for s in range(0, len(q), 1024):
            q[s:s + 1024] @ bank.T

    def gemm_tiles() -> None:
        for s in range(0, len(q), 4096):
            for b in range(0, len(bank), 1024):
                q[s:s + 4096] @ bank[b:b + 1024].T

    def search(min_res: int = 100, qbs: int = 4096, dbs: int = 1024):
        faiss.cvar.distance_compute_min_k_reservoir = min_res
        faiss.cvar.distance_compute_blas_query_bs = qbs
        faiss.cvar.distance_compute_blas_database_bs = dbs
        return index.search(q.numpy(), K)

    runs = {"gemm rows 1024 x bank": gemm_rows, "gemm tiles 4096 x 1024": gemm_tiles,
            "faiss defaults (4096 x 1024, reservoir)": search, "faiss heap (4096 x 1024)": lambda: search(1000),
            "faiss 256 x 1024": lambda: search(100, 256, 1024), "faiss 512 x 512": lambda: search(100, 512, 512),
            "faiss 1024 x 1024": lambda: search(100, 1024, 1024), "faiss 256 x 2048": lambda: search(100, 256, 2048),
            "faiss 4096 x 4096": lambda: search(100, 4096, 4096), "faiss 1024 x 8192": lambda: search(100, 1024, 8192)}
    ref = search()
    best, same = {k: float("inf") for k in runs}, {}
    for rep in range(2):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            if out is not None and rep == 0:
                same[name] = float((out[1] == ref[1]).mean())
    search()  # back to the defaults
    gemm = min(best["gemm rows 1024 x bank"], best["gemm tiles 4096 x 1024"])
    print(f"load average {os.getloadavg()[0]:.2f}; 1 thread; best of 2")
    for name, t in best.items():
        print(f"{name:42s} {t:6.2f} s  {t / gemm:5.2f}x GEMM" + (f"  same neighbours {100 * same[name]:.2f}%" if name in same else ""))


if __name__ == "__main__":
    main()
