"""Weighted k-NN on frozen features (knn@1).

Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"
(k=200, T=0.1) and Caron et al. 2021, DINO (k=20, T=0.07); reference implementation:
facebookresearch/dino `eval_knn.py::knn_classifier`. Features are L2-normalised, similarity
is cosine, and each of the k nearest bank items votes for its label with weight exp(sim / T).
The bank is train + val (k-NN has no hyperparameter to choose on val); queries are test.

Search is exact. On CPU it uses faiss's ``IndexFlatIP`` (Johnson et al. 2019, "Billion-scale
similarity search with GPUs"; blocked BLAS inner products + per-query heaps) when faiss is
installed, with the thread count torch has; otherwise (and on GPU) a torch path: one GEMM of a
block of queries against the whole bank, then ``topk``. Both give the same neighbours up to
float32 ties (items whose similarities differ by rounding).
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from evalbench.core.errors import ConfigError
from evalbench.core.validate import Doc, PositiveInt
from evalbench.features.artifact import Features
from evalbench.protocols.bootstrap import Predictions
from evalbench.protocols.base import PARAMS, PROBES, ProbeParams, ProbeResult, TaskSizes

try:  # optional engine: the field's exact-search library
    import faiss
except ImportError:  # pragma: no cover - exercised where faiss is not installed
    faiss = None


class BankTooSmallError(ConfigError):
    """A k-NN setting asks for more neighbours than the bank holds (no silent clamping: DESIGN.md §7.3)."""


class KnnSetting(Doc):
    k: Annotated[int, Field(ge=1, description="an integer >= 1 (neighbours; at most the bank size, train + val)")]
    T: Annotated[float, Field(gt=0, allow_inf_nan=False, description="a finite number > 0 (the vote temperature)")]


@PARAMS.register("knn")
class KnnParams(ProbeParams):
    settings: Annotated[list[KnnSetting], Field(min_length=1, description="a non-empty list of {k, T}")]
    chunk_size: PositiveInt

    @field_validator("settings")
    @classmethod
    def _distinct(cls, settings: list[KnnSetting]) -> list[KnnSetting]:
        names = [metric_name(s.k, s.T) for s in settings]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"two settings report the same metric {dup!r}; list each (k, T) once")
        return settings

    def check_sizes(self, sizes: TaskSizes) -> list[tuple[tuple, str]]:
        return [(("settings", i, "k"), f"got {s.k}; allowed: at most {sizes.bank}, the size of the k-NN bank of task "
                 f"{sizes.task!r} (train + val); lower k or use a task with more training data")
                for i, s in enumerate(self.settings) if s.k > sizes.bank]



def check_k(k: int, bank_size: int) -> None:
    if k < 1:
        raise ConfigError(f"k-NN asks for k={k} neighbours; k must be at least 1")
    if k > bank_size:
        raise BankTooSmallError(
            f"k-NN asks for k={k} neighbours but the bank (train + val) holds only {bank_size} items; "
            f"lower k to at most {bank_size} in the protocol's `settings`, or use a task with more training data")


def torch_topk(queries: torch.Tensor, bank: torch.Tensor, k: int, *, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarities of each query over the bank, at most chunk x chunk similarities at once.

    Both inputs L2-normalised. Returns (sims, idx), each (Q, k), sorted descending.
    """
    block = max(1, chunk * chunk // max(1, len(bank)))  # queries per GEMM against the whole bank
    out_v, out_i = [], []
    for qs in range(0, len(queries), block):
        v, i = (queries[qs : qs + block] @ bank.T).topk(k, dim=1)  # (B, N) cosine -> (B, k)
        out_v.append(v)
        out_i.append(i)
    return torch.cat(out_v), torch.cat(out_i)


def faiss_topk(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same search with faiss (CPU), using as many threads as torch does."""
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.contiguous().numpy())
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())
    try:
        sims, idx = index.search(queries.contiguous().numpy(), k)
    finally:
        faiss.omp_set_num_threads(before)
    return torch.from_numpy(sims), torch.from_numpy(idx)


def search(queries: torch.Tensor, bank: torch.Tensor, k: int, *, chunk: int, engine: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k inner products: faiss on CPU where installed (engine "auto" or "faiss"), else torch."""
    check_k(k, len(bank))
    if engine == "faiss" or (engine == "auto" and faiss is not None and queries.device.type == "cpu"):
        return faiss_topk(queries, bank, k)
    return torch_topk(queries, bank, k, chunk=chunk)


def weighted_vote(sims: torch.Tensor, labels: torch.Tensor, *, T: float, num_classes: int) -> torch.Tensor:
    """(Q, k) similarities and (Q, k) neighbour labels -> (Q, num_classes) class scores."""
    weights = (sims / T).exp()
    return torch.zeros(len(sims), num_classes, device=sims.device).scatter_add_(1, labels, weights)


def knn_predict(bank_x: torch.Tensor, bank_y: torch.Tensor, query_x: torch.Tensor, *, settings: list[dict],
                num_classes: int, chunk: int = 4096, engine: str = "auto") -> dict[tuple[int, float], torch.Tensor]:
    """Predictions for every (k, T) setting from one top-k search with the largest k."""
    bank = F.normalize(bank_x.float(), dim=1)
    query = F.normalize(query_x.float(), dim=1)
    for s in settings:
        check_k(int(s["k"]), len(bank))
    sims, idx = search(query, bank, max(int(s["k"]) for s in settings), chunk=chunk, engine=engine)
    sims, idx = sims.to(query.device), idx.to(query.device)  # sorted, so [:, :k] is the top-k
    preds = {}
    for s in settings:
        k = int(s["k"])
        scores = weighted_vote(sims[:, :k], bank_y[idx[:, :k]], T=float(s["T"]), num_classes=num_classes)
        preds[(k, float(s["T"]))] = scores.argmax(dim=1)
    return preds


def metric_name(k: int, T: float) -> str:
    return f"top1_k{k}_T{T:g}"


@PROBES.register("knn")
def knn_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    bank_x, bank_y = features.tensors("train", "val", device=device)
    test_x, test_y = features.tensors("test", device=device)
    preds = knn_predict(bank_x, bank_y, test_x, settings=params["settings"], num_classes=features.num_classes,
                        chunk=int(params["chunk_size"]))
    metrics = {metric_name(k, T): float((p == test_y).float().mean()) for (k, T), p in preds.items()}
    engine = "faiss" if faiss is not None and device.type == "cpu" else "torch"
    predictions = Predictions(test_y.cpu().numpy(), {metric_name(k, T): p.cpu().numpy() for (k, T), p in preds.items()})
    return ProbeResult(metrics, {"bank_size": len(bank_x), "queries": len(test_x), "search": engine}, predictions)
