"""faiss_topk (the CPU search knn_predict uses) against a float64 numpy brute-force top-k.

2500 queries (more than one of faiss's query tiles) at 1, 2 and 3 torch threads: the same
neighbours as the reference (near-ties aside), faiss's process-wide tile settings unchanged, and
torch's thread count left alone.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalbench.protocols import knn

pytestmark = pytest.mark.skipif(knn.faiss is None, reason="faiss not installed")


@pytest.fixture(scope="module")
def unit_vectors() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    bank = F.normalize(torch.from_numpy(rng.normal(size=(3000, 24)).astype(np.float32)), dim=1)
    queries = F.normalize(torch.from_numpy(rng.normal(size=(2500, 24)).astype(np.float32)), dim=1)
    return queries, bank


def reference_topk(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 similarities, their top-k (indices, values, descending), and the gap at each rank."""
    sim = queries.double().numpy() @ bank.double().numpy().T
    order = np.argsort(-sim, axis=1, kind="stable")[:, : k + 1]
    vals = np.take_along_axis(sim, order, axis=1)
    return order[:, :k], vals[:, :k], -np.diff(vals, axis=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_faiss_topk__matches_brute_force_at_any_thread_count(unit_vectors, threads):
    queries, bank = unit_vectors
    k = 50
    ref_i, ref_v, gaps = reference_topk(queries, bank, k)
    cvar = knn.faiss.cvar
    tiles_before = cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sims, idx = knn.faiss_topk(queries, bank, k)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(torch_threads)
    assert (cvar.distance_compute_blas_query_bs, cvar.distance_compute_blas_database_bs) == tiles_before
    assert sims.shape == idx.shape == (len(queries), k)
    np.testing.assert_allclose(sims.numpy(), ref_v, rtol=0, atol=1e-6)
    # Positions whose neighbour is separated from both sides by more than float32 rounding must agree
    # exactly; the rest (near-ties) may come in either order but must be the same set per query.
    clear = np.ones_like(gaps, dtype=bool)
    clear[:, :-1] &= gaps[:, :-1] > 1e-5
    clear[:, 1:] &= gaps[:, :-1] > 1e-5
    clear[:, -1] &= gaps[:, -1] > 1e-5
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(idx.numpy()[clear], ref_i[clear])
    # Where the k-th and (k+1)-th similarities are clearly apart, the neighbour set is determined.
    settled = gaps[:, -1] > 1e-5
    assert settled.mean() > 0.95
    np.testing.assert_array_equal(np.sort(idx.numpy()[settled], axis=1), np.sort(ref_i[settled], axis=1))

