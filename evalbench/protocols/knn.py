"""Weighted k-NN on frozen features (knn@1).

Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"
(k=200, T=0.1) and Caron et al. 2021, DINO (k=20, T=0.07); reference implementation:
facebookresearch/dino `eval_knn.py::knn_classifier`. Features are L2-normalised, similarity
is cosine, and each of the k nearest bank items votes for its label with weight exp(sim / T).
The bank is train + val (k-NN has no hyperparameter to choose on val); queries are test.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evalbench.features.artifact import Features
from evalbench.protocols.base import PROBES, ProbeResult


def chunked_topk(queries: torch.Tensor, bank: torch.Tensor, k: int, *, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarities of each query over the bank, touching at most chunk x chunk at once.

    Both inputs L2-normalised. Returns (sims, idx), each (Q, k), sorted descending.
    """
    out_v, out_i = [], []
    for qs in range(0, len(queries), chunk):
        q = queries[qs : qs + chunk]
        best_v = q.new_full((len(q), 0), float("-inf"))
        best_i = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
        for bs in range(0, len(bank), chunk):
            sim = q @ bank[bs : bs + chunk].T  # (B, C) cosine
            v, i = sim.topk(min(k, sim.shape[1]), dim=1)
            best_v, pos = torch.cat([best_v, v], 1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
            best_i = torch.cat([best_i, i + bs], 1).gather(1, pos)  # running top-k merge
        out_v.append(best_v)
        out_i.append(best_i)
    return torch.cat(out_v), torch.cat(out_i)


def weighted_vote(sims: torch.Tensor, labels: torch.Tensor, *, T: float, num_classes: int) -> torch.Tensor:
    """(Q, k) similarities and (Q, k) neighbour labels -> (Q, num_classes) class scores."""
    weights = (sims / T).exp()
    return torch.zeros(len(sims), num_classes, device=sims.device).scatter_add_(1, labels, weights)


def knn_predict(bank_x: torch.Tensor, bank_y: torch.Tensor, query_x: torch.Tensor, *, settings: list[dict],
                num_classes: int, chunk: int = 4096) -> dict[tuple[int, float], torch.Tensor]:
    """Predictions for every (k, T) setting from one top-k pass with the largest k."""
    bank = F.normalize(bank_x.float(), dim=1)
    query = F.normalize(query_x.float(), dim=1)
    k_max = min(max(int(s["k"]) for s in settings), len(bank))
    sims, idx = chunked_topk(query, bank, k_max, chunk=chunk)  # sorted, so [:, :k] is the top-k
    preds = {}
    for s in settings:
        k = min(int(s["k"]), len(bank))
        scores = weighted_vote(sims[:, :k], bank_y[idx[:, :k]], T=float(s["T"]), num_classes=num_classes)
        preds[(int(s["k"]), float(s["T"]))] = scores.argmax(dim=1)
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
    return ProbeResult(metrics, {"bank_size": len(bank_x), "queries": len(test_x)})
