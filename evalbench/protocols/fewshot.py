"""Few-shot evaluation on frozen features (fewshot@1).

N-way K-shot episodes (Vinyals et al. 2016, "Matching Networks"; the protocol of Chen et al. 2019,
"A Closer Look at Few-shot Classification"): each episode draws ``ways`` classes, ``K`` support
images per class from train and ``queries`` query images per class from test; the episode's score is
the top-1 of its queries. Reported: the mean over ``episodes`` episodes with its 95% Student-t
interval (the literature's "mean ± 95% CI"), per K and classifier:

- ``centroid``: nearest class mean (Snell et al. 2017's prototypes on frozen features; SimpleShot,
  Wang et al. 2019, with CL2N features: centred by the train mean, then L2-normalised);
- ``ridge``: a closed-form ridge classifier (one-vs-rest least squares onto +-1 targets with an
  unpenalised intercept: scikit-learn's ``RidgeClassifier``), as big_vision's few-shot evaluator
  (``big_vision/evaluators/fewshot_lsr.py``): the L2 strength is chosen on val, and one
  eigendecomposition of each episode's support Gram matrix serves every L2 of the grid;
- ``knn``: few-shot k-NN, all classes at once: a bank of K train images per class, the whole test
  split as queries, cosine similarity with votes exp(sim / T) as knn@1; mean over ``knn_draws`` banks.

The L2 of the ridge classifier is chosen per K on ``val_episodes`` episodes whose queries come from
val (supports from train), never on test; ties go to the stronger L2. For each episode, the K-shot
supports are the first K of one draw of max(shots) per class and the queries are shared, so the
numbers of different K are paired. Episodes come from the run's seed (the protocol is stochastic).
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from evalbench.core.errors import ConfigError
from evalbench.core.validate import PositiveFloat, PositiveInt
from evalbench.features.artifact import Features
from evalbench.protocols.base import PARAMS, PROBES, ProbeParams, ProbeResult, TaskSizes
from evalbench.protocols.bootstrap import mean_interval
from evalbench.protocols.knn import knn_predict

CHUNK = 64  # episodes solved at once (bounded memory: CHUNK x support x dim)


def _distinct(values: list) -> list:
    dup = next((v for v in values if values.count(v) > 1), None)
    if dup is not None:
        raise ValueError(f"{dup:g} is listed twice; list each value once")
    return values


@PARAMS.register("fewshot")
class FewshotParams(ProbeParams):
    ways: Annotated[int, Field(ge=2, description="an integer >= 2 (classes per episode; at most the task's classes)")]
    shots: Annotated[list[PositiveInt], Field(min_length=1, description="a non-empty list of integers >= 1 (K)")]
    queries: PositiveInt
    episodes: Annotated[int, Field(ge=2, description="an integer >= 2 (test episodes: the interval needs two)")]
    val_episodes: PositiveInt
    l2_grid: Annotated[list[PositiveFloat], Field(min_length=1, description="a non-empty list of finite numbers > 0")]
    knn_k: PositiveInt
    knn_T: PositiveFloat
    knn_draws: Annotated[int, Field(ge=2, description="an integer >= 2 (k-NN banks drawn)")]

    @field_validator("shots", "l2_grid")
    @classmethod
    def _once(cls, values: list) -> list:
        return _distinct(values)

    def check_sizes(self, sizes: TaskSizes) -> list[tuple[tuple, str]]:
        """What the task is too small for, before any work: the bank for ways x K, then (from the labels'
        per-class counts, where the data can be read) the ways, K against the smallest train class and
        the queries against the smallest val and test class; the same rules as ``check_counts``."""
        need = self.ways * max(self.shots)
        if need > sizes.bank:
            return [(("shots",), f"got {max(self.shots)}; {self.ways} ways x {max(self.shots)} shots need {need} train "
                     f"images but task {sizes.task!r} holds {sizes.bank} (train + val); lower the shots or the ways")]
        counts = sizes.class_counts()
        if counts is None:  # data not readable: planning records that for the task's jobs
            return []
        if self.ways > len(counts["train"]):
            return [(("ways",), f"got {self.ways}; task {sizes.task!r} has {len(counts['train'])} classes; lower `ways` "
                     f"to at most {len(counts['train'])}")]
        for split, loc, n in (("train", "shots", max(self.shots)), ("val", "queries", self.queries),
                              ("test", "queries", self.queries)):
            c = int(np.argmin(counts[split]))
            if counts[split][c] < n:
                what = f"K = {n} (the largest of `shots`)" if split == "train" else f"{n} queries per class"
                return [((loc,), f"{what}, but class {c} of task {sizes.task!r} has only {counts[split][c]} {split} "
                         f"images (the smallest class of its {split} split after the split file); lower `{loc}` to "
                         f"at most {counts[split][c]}, or use a task with more images per class")]
        return []


def class_indices(y: np.ndarray, num_classes: int) -> list[np.ndarray]:
    return [np.flatnonzero(y == c) for c in range(num_classes)]


def check_counts(y: dict[str, np.ndarray], num_classes: int, p: FewshotParams) -> None:
    """Every class holds enough images for the episodes (the class a draw could pick): else a
    ConfigError naming the smallest class, before any episode is drawn (DESIGN.md §7.3)."""
    if p.ways > num_classes:
        raise ConfigError(f"fewshot: {p.ways} ways but the task has {num_classes} classes; lower `ways`")
    need = {"train": max(p.shots), "val": p.queries, "test": p.queries}
    for split, n in need.items():
        counts = np.bincount(y[split], minlength=num_classes)
        c = int(counts.argmin())
        if counts[c] < n:
            what = "K (the largest of `shots`)" if split == "train" else "`queries`"
            raise ConfigError(f"fewshot: {what} is {n} but class {c} has only {int(counts[c])} {split} images (the "
                              f"smallest class of the {split} split); lower it to at most {int(counts[c])}")
    if p.knn_k > min(p.shots) * num_classes:
        raise ConfigError(f"fewshot: knn_k={p.knn_k} but the {min(p.shots)}-shot bank holds only "
                          f"{min(p.shots) * num_classes} images; lower knn_k")


def draw_episodes(rng: np.random.Generator, train: list[np.ndarray], query: list[np.ndarray], *, ways: int,
                  shots: int, queries: int, episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Support (E, ways, shots) and query (E, ways, queries) row indices; class w of an episode is its w-th draw."""
    sup = np.empty((episodes, ways, shots), dtype=np.int64)
    qry = np.empty((episodes, ways, queries), dtype=np.int64)
    for e in range(episodes):
        for w, c in enumerate(rng.choice(len(train), ways, replace=False)):
            sup[e, w] = rng.choice(train[c], shots, replace=False)
            qry[e, w] = rng.choice(query[c], queries, replace=False)
    return sup, qry


def cl2n(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """SimpleShot's CL2N: centre by the train mean, then L2-normalise."""
    return F.normalize(x - mean, dim=-1)


def centroid_predict(sx: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
    """(E, W, K, D) supports, (E, M, D) queries -> (E, M) index of the nearest class mean (Euclidean)."""
    return torch.cdist(qx, sx.mean(2)).argmin(-1)


def ridge_scores(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, l2s: list[float], num_classes: int) -> torch.Tensor:
    """Scores of scikit-learn's RidgeClassifier(alpha=l2, fit_intercept=True) for every l2 at once.

    sx (E, n, D) supports, sy (E, n) labels in [0, C), qx (E, m, D) queries -> (L, E, m, C).
    Targets are +-1 one-vs-rest; X and Y are centred (the intercept); W = Xc^T (Xc Xc^T + l2 I)^-1 Yc,
    through the eigendecomposition Xc Xc^T = U diag(s) U^T, made once per episode (big_vision's
    fewshot_lsr.py) for the whole grid.
    """
    Y = 2 * F.one_hot(sy, num_classes).to(sx.dtype) - 1  # (E, n, C)
    xm, ym = sx.mean(1, keepdim=True), Y.mean(1, keepdim=True)
    Xc, Yc = sx - xm, Y - ym
    s, U = torch.linalg.eigh(Xc @ Xc.transpose(1, 2))  # (E, n), (E, n, n)
    A = (qx - xm) @ Xc.transpose(1, 2) @ U  # (E, m, n): queries in the eigenbasis
    B = U.transpose(1, 2) @ Yc  # (E, n, C)
    s = s.clamp_min(0)  # rounding below zero on a PSD matrix
    return torch.stack([A @ (B / (s + l2)[..., None]) + ym for l2 in l2s])


def episode_accuracy(pred: torch.Tensor, qy: torch.Tensor) -> np.ndarray:
    return (pred == qy).double().mean(-1).cpu().numpy()


def run_episodes(x_sup: torch.Tensor, x_qry: torch.Tensor, sup: np.ndarray, qry: np.ndarray, *, shots: list[int],
                 l2s: list[float]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """K -> (centroid (E,), ridge (L, E)) per-episode top-1, in chunks of CHUNK episodes."""
    out: dict[int, tuple[list, list]] = {k: ([], []) for k in shots}
    E, W, Q = qry.shape
    qy = torch.arange(W).repeat_interleave(Q)  # class w of an episode is label w
    for e0 in range(0, E, CHUNK):
        qx = x_qry[torch.from_numpy(qry[e0:e0 + CHUNK].reshape(-1, W * Q))]  # (e, W*Q, D)
        for k in shots:
            sx = x_sup[torch.from_numpy(sup[e0:e0 + CHUNK, :, :k])]  # (e, W, k, D)
            out[k][0].append(episode_accuracy(centroid_predict(sx, qx), qy))
            sy = torch.arange(W).repeat_interleave(k).expand(len(sx), -1)
            scores = ridge_scores(sx.flatten(1, 2), sy, qx, l2s, W)  # (L, e, W*Q, W)
            out[k][1].append(episode_accuracy(scores.argmax(-1), qy))
    return {k: (np.concatenate(c), np.concatenate(r, axis=-1)) for k, (c, r) in out.items()}


def fewshot_knn(bank_x: torch.Tensor, train: list[np.ndarray], test_x: torch.Tensor, test_y: torch.Tensor, *,
                rng: np.random.Generator, shots: int, draws: int, k: int, T: float, num_classes: int) -> np.ndarray:
    """Top-1 on the whole test split of k-NN whose bank is ``shots`` train images per class, per draw."""
    accs = []
    for _ in range(draws):
        idx = torch.from_numpy(np.concatenate([rng.choice(t, shots, replace=False) for t in train]))
        pred = knn_predict(bank_x[idx], torch.arange(num_classes).repeat_interleave(shots), test_x,
                           settings=[{"k": k, "T": T}], num_classes=num_classes, engine="torch")[(k, float(T))]
        accs.append(float((pred == test_y).double().mean()))
    return np.array(accs)


@PROBES.register("fewshot")
def fewshot_probe(features: Features, *, params: dict, seed: int, device: torch.device) -> ProbeResult:
    p = FewshotParams.model_validate(params)
    C = features.num_classes
    check_counts(features.y, C, p)
    rng = np.random.default_rng([int(seed or 0), 7])
    raw = {s: torch.tensor(features.x[s], dtype=torch.float64, device=device) for s in ("train", "val", "test")}
    mean = raw["train"].mean(0)
    x = {s: cl2n(v, mean) for s, v in raw.items()}
    train = class_indices(features.y["train"], C)
    shots, l2s = sorted(p.shots), list(p.l2_grid)
    metrics, intervals, details = {}, {}, {"ways": p.ways, "queries": p.queries, "episodes": p.episodes,
                                           "val_episodes": p.val_episodes, "l2": {}, "val_curve": {}}
    # the L2 of the ridge classifier, per K, on val episodes (supports: train; queries: val)
    sup, qry = draw_episodes(rng, train, class_indices(features.y["val"], C), ways=p.ways, shots=max(shots),
                             queries=p.queries, episodes=p.val_episodes)
    val = run_episodes(x["train"], x["val"], sup, qry, shots=shots, l2s=l2s)
    chosen = {}
    for k in shots:
        curve = val[k][1].mean(1)
        chosen[k] = max(l2 for l2, acc in zip(l2s, curve) if acc == curve.max())  # ties: the stronger
        details["l2"][str(k)] = chosen[k]
        details["val_curve"][str(k)] = {f"{l2:g}": float(a) for l2, a in zip(l2s, curve)}
    # test episodes (supports: train; queries: test)
    sup, qry = draw_episodes(rng, train, class_indices(features.y["test"], C), ways=p.ways, shots=max(shots),
                             queries=p.queries, episodes=p.episodes)
    test = run_episodes(x["train"], x["test"], sup, qry, shots=shots, l2s=[chosen[k] for k in shots])
    test_x, test_y = raw["test"].float(), torch.as_tensor(features.y["test"], device=device)
    for i, k in enumerate(shots):
        knn = fewshot_knn(raw["train"].float(), train, test_x, test_y, rng=rng, shots=k, draws=p.knn_draws,
                          k=p.knn_k, T=p.knn_T, num_classes=C)
        for name, accs in (("centroid", test[k][0]), ("ridge", test[k][1][i]), ("knn", knn)):
            m = f"top1_{name}_{k}shot"
            metrics[m], intervals[m] = mean_interval(accs)
    details["ci"] = "95% Student-t interval over episodes (centroid, ridge) and over k-NN banks (knn)"
    return ProbeResult(metrics, details, intervals=intervals)
