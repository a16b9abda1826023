"""Statistics over records: cells with mean ± std and a 95% interval, paired tests, ranks with ties.

A **cell** is one (checkpoint, task, protocol@version, params_id, metric): the newest ok record of
each seed (``frame.py``'s ``latest``), aggregated over seeds. ``cell_stats`` gives each cell

- ``mean`` over seeds, ``std`` (sample std, ddof=1; NaN for one run) and ``n`` (records averaged);
- a 95% interval ``lo``, ``hi`` and how it was made, ``interval`` (one of ``INTERVALS``):
  ``record`` — one run: the record's own ``details.ci95`` (percentile bootstrap over test examples,
  or the probe's own interval over episodes / images, DESIGN.md §3);
  ``bootstrap-seeds`` — several runs that all stored per-example predictions of the same test
  examples (equal ``y_true``): the percentile bootstrap over test examples (Efron & Tibshirani 1993,
  ch. 13; 1000 resamples, fixed seed, ``protocols/bootstrap.py``) of the mean-over-seeds accuracy,
  i.e. each example scores the fraction of seeds that got it right. It measures the test-set
  sampling error of this mean, not the spread between seeds (which ``std`` shows);
  ``t-seeds`` — several runs without (pairable) predictions: mean ± t(0.975, n-1) · std / sqrt(n),
  the Student-t interval over seeds (``bootstrap.mean_interval``), intersected with [0, 1] for
  accuracies (with 2 seeds t(0.975, 1) = 12.7: the interval can reach past 0 or 1);
  ``none`` — one run whose record has no interval (diagnostics, records before intervals);
- ``scores``: the per-example mean-over-seeds correctness (N,) float array where predictions exist
  and give each record's value (``None`` otherwise: a predictions file that does not reproduce its
  record's number is not used) and ``examples``, a digest of the test labels: two cells pair only when their
  digests are equal.

**Paired test** (``paired_test``; ``compare`` picks two checkpoints of a column): two cells' per-example scores on the same test examples. The
difference of accuracies with its paired 95% percentile-bootstrap interval (``paired_bootstrap``:
Koehn 2004, Dror et al. 2018), its two-sided bootstrap p-value 2·min(P*(d ≤ 0), P*(d ≥ 0)), and,
for single runs (0/1 scores), McNemar's exact test: under H0 the b discordant pairs where only a is
right are Binomial(b + c, 1/2), p = min(1, 2·P(X ≤ min(b, c))) (McNemar 1947; the exact form of
Edwards 1948), via ``scipy.stats.binomtest``. A difference is **significant** at ``ALPHA`` = 0.05:
for two single runs (0/1 scores) when McNemar's exact p < 0.05 — exact where the percentile
bootstrap is not (with 4 discordant examples of 400, all for a, every resample but ~2% favours a,
so the bootstrap interval excludes 0 while the exact p is 2 · 0.5^4 = 0.125); otherwise (scores
averaged over seeds) when the paired 95% bootstrap interval excludes 0.

**Ranks** (``rank_cells``, accuracy metrics only — higher is better): in each column,
rank(c) = 1 + the number of checkpoints significantly better than c, where d is significantly better
than c when (a) both have pairable predictions and d − c is significant as above (McNemar for two
single runs, else the paired bootstrap interval lies above 0), else (b) both have intervals and they do not overlap (lo_d > hi_c; conservative, as
overlapping 95% intervals can still differ significantly). So the best and every checkpoint no
other is significantly better than share rank 1 ("tied with the best"); ranks 1, 1, 3 read as two
tied leaders and one significantly behind. ``rank_basis`` says what the cell's comparisons with the
checkpoints of higher mean (the only ones that can be significantly better) used:
``paired`` (all), ``intervals`` (at least one by overlap), ``none`` (at least one comparison had
neither, so a tie there means "unknown", not "not significant"); None for the best (nothing above
it). A cell none of whose comparisons had a basis gets no rank (<NA>). The column's pairs are resampled
together (one draw of test examples for all checkpoints: the same draws ``paired_bootstrap`` makes
for each pair, so each pair's interval equals its ``paired_bootstrap``).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from evalbench.protocols.bootstrap import (LEVEL, RESAMPLES, SEED, bootstrap_means, mean_interval, paired_bootstrap,
                                           percentile_interval)
from evalbench.results.frame import metric_names
from evalbench.results.predictions import load_predictions

ALPHA = 1 - LEVEL  # significance level of the paired tests and ranks (0.05)
CELL = ["checkpoint", "task", "protocol_id", "params_id", "metric"]  # one table cell
COLUMN = ["task", "protocol_id", "params_id", "metric"]  # one table column
INTERVALS = ("record", "bootstrap-seeds", "t-seeds", "none")
RANK_BASES = ("paired", "intervals", "none")  # strongest first


def is_accuracy(metric: str) -> bool:
    """Top-1 metrics: fractions in [0, 1], higher is better, per-example predictions where stored."""
    return metric.startswith("top1")


def format_value(metric: str, v: float) -> str:
    """Accuracies in % with one decimal, other metrics (diagnostics) with 3 significant digits; NaN: –."""
    if math.isnan(v):
        return "–"
    return f"{100 * v:.1f}" if is_accuracy(metric) else f"{v:.3g}"


def label_fraction(params: dict) -> Optional[float]:
    """A fine-tuning protocol's fraction of the train labels (its ``label_fraction`` param), else None."""
    f = (params or {}).get("label_fraction")
    return float(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else None


def protocol_order(metrics: Iterable[str], params: dict) -> tuple[int, float]:
    """Where a protocol's columns go in every table and on the page: protocols with accuracies first
    (frozen probes, then fine-tuning by label fraction: 1%, 10%, 100%), the others (diagnostics) last;
    ties are broken by the caller (protocol name, params)."""
    return (0 if any(is_accuracy(m) for m in metrics) else 1, label_fraction(params) or 0.0)


# ---------------------------------------------------------------- paired tests


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of two classifiers' 0/1 correctness on the same examples."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PairedTest:
    """a − b on the same test examples (accuracy as a fraction)."""

    diff: float
    lower: float  # paired percentile-bootstrap interval of diff
    upper: float
    p_bootstrap: float  # two-sided: 2 min(P*(d <= 0), P*(d >= 0)), capped at 1
    mcnemar_p: Optional[float]  # exact McNemar (0/1 scores only: single runs), else None
    only_a: int  # examples only a gets right (0/1 scores), else counts of a > b per example
    only_b: int
    n: int

    @property
    def significant(self) -> bool:
        """McNemar's exact p < ALPHA for 0/1 scores, else the paired 95% bootstrap interval excludes 0."""
        if self.mcnemar_p is not None:
            return self.mcnemar_p < ALPHA
        return self.lower > 0 or self.upper < 0


def _binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def paired_test(scores_a: np.ndarray, scores_b: np.ndarray, *, resamples: int = RESAMPLES,
                seed: int = SEED) -> PairedTest:
    """Paired bootstrap (and McNemar where both are 0/1) of per-example scores (correctness, or the
    fraction of seeds correct) of two checkpoints on the same examples, in the same order."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    ab = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    ba = paired_bootstrap(b, a, resamples=resamples, seed=seed)  # same draws: P*(b - a <= 0) = P*(d >= 0)
    binary = _binary(a) and _binary(b)
    return PairedTest(diff=ab["diff"], lower=ab["lower"], upper=ab["upper"],
                      p_bootstrap=min(1.0, 2 * min(ab["p_not_better"], ba["p_not_better"])),
                      mcnemar_p=mcnemar_exact(a.astype(bool), b.astype(bool)) if binary else None,
                      only_a=int((a > b).sum()), only_b=int((b > a).sum()), n=len(a))


# ---------------------------------------------------------------- cells

def long_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (latest ok record, metric): CELL + seed, value, lo, hi, predictions, key."""
    ok = df[(df["status"] == "ok") & df["latest"]]
    parts = []
    for m in metric_names(df):
        sub = ok[ok[f"metric.{m}"].notna()]
        if sub.empty:
            continue
        col = lambda name: sub[name] if name in sub else pd.Series([None] * len(sub), index=sub.index)  # noqa: E731
        parts.append(pd.DataFrame({
            "checkpoint": sub["checkpoint"], "checkpoint_label": sub["checkpoint_label"], "task": sub["task"],
            "protocol_id": sub["protocol_id"], "params_id": sub["params_id"], "metric": m, "seed": sub["seed"],
            "value": sub[f"metric.{m}"].astype(float), "lo": col(f"ci95_lo.{m}").astype(float),
            "hi": col(f"ci95_hi.{m}").astype(float),
            "predictions": sub["predictions"], "key": sub["key"], "created": sub["created"]}))
    cols = CELL + ["checkpoint_label", "seed", "value", "lo", "hi", "predictions", "key", "created"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def _digest(y_true: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(y_true, dtype=np.int64).tobytes()).hexdigest()[:16]


def _scores(paths: list, values: list, metric: str, cache: dict) -> tuple[Optional[np.ndarray], Optional[str]]:
    """The mean over runs of per-example correctness, and the test labels' digest; (None, None) where a
    run has no predictions file, lacks the metric, its predictions do not give its record's value (a file
    that is not this record's), or the runs did not see the same examples."""
    correct, digests = [], set()
    for path, value in zip(paths, values):
        if not isinstance(path, str):
            return None, None
        if path not in cache:
            cache[path] = load_predictions(path)
        pred = cache[path]
        if pred is None or metric not in pred.y_pred:
            return None, None
        right = pred.correct()[metric]
        if len(right) == 0 or abs(float(right.mean()) - value) > 1e-6:
            return None, None
        correct.append(right)
        digests.add(_digest(pred.y_true))
    if len(digests) != 1:
        return None, None
    return np.mean(np.stack(correct).astype(np.float64), axis=0), digests.pop()


def _interval(g: pd.DataFrame, scores: Optional[np.ndarray]) -> tuple[float, float, str]:
    """(lo, hi, how) of one cell's runs (module docstring)."""
    if len(g) == 1:
        lo, hi = float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
        return (lo, hi, "record") if math.isfinite(lo) and math.isfinite(hi) else (math.nan, math.nan, "none")
    if scores is not None:  # filled in by _bootstrap_seeds, every cell of the same examples at once
        return math.nan, math.nan, "bootstrap-seeds"
    _, (lo, hi) = mean_interval(g["value"].to_numpy())
    if is_accuracy(g["metric"].iloc[0]):  # the mean of fractions lies in [0, 1]: intersecting keeps the coverage
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return lo, hi, "t-seeds"


def cell_stats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of a ``load_results`` frame: CELL, checkpoint_label, mean, std, n, lo, hi,
    interval, scores, examples, keys (the records averaged), sorted by CELL."""
    long = long_frame(df)
    cache: dict = {}
    rows = []
    for cell, g in long.groupby(CELL, sort=True):
        scores, examples = (_scores(list(g["predictions"]), list(g["value"]), cell[-1], cache) if is_accuracy(cell[-1])
                            else (None, None))
        lo, hi, how = _interval(g, scores)
        values = g["value"].to_numpy()
        rows.append({**dict(zip(CELL, cell)), "checkpoint_label": g.sort_values("created")["checkpoint_label"].iloc[-1],
                     "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                     "n": len(values), "lo": lo, "hi": hi, "interval": how, "scores": scores, "examples": examples,
                     "keys": tuple(sorted(g["key"].dropna()))})
    cols = CELL + ["checkpoint_label", "mean", "std", "n", "lo", "hi", "interval", "scores", "examples", "keys"]
    return _bootstrap_seeds(pd.DataFrame(rows, columns=cols))


def _bootstrap_seeds(cells: pd.DataFrame) -> pd.DataFrame:
    """The ``bootstrap-seeds`` intervals: one resampling per set of test examples for all its cells
    (each cell's bounds are those of its own bootstrap: the same draws, module docstring)."""
    todo = cells[cells["interval"] == "bootstrap-seeds"]
    for _, grp in todo.groupby("examples"):
        bounds = percentile_interval(bootstrap_means(np.stack(list(grp["scores"]))))  # (k, 2)
        cells.loc[grp.index, "lo"], cells.loc[grp.index, "hi"] = bounds[:, 0], bounds[:, 1]
    return cells


def compare(cells: pd.DataFrame, a: str, b: str, *, task: str, protocol: str, metric: str,
            params_id: Optional[str] = None) -> PairedTest:
    """``paired_test`` of checkpoints a and b in one column of ``cell_stats`` (``protocol``: name@version;
    ``params_id`` where the protocol ran with several params), e.g. in a notebook::

        cells = cell_stats(load_results("results"))
        compare(cells, "simclr", "byol", task="digits", protocol="linear@2", metric="top1").significant
    """
    from evalbench.core.errors import EvalbenchError

    col = cells[(cells["task"] == task) & (cells["protocol_id"] == protocol) & (cells["metric"] == metric)]
    if params_id is not None:
        col = col[col["params_id"] == params_id]
    found = {name: col[col["checkpoint"] == name] for name in (a, b)}
    for name, rows in found.items():
        if len(rows) != 1:
            what = "no cell" if rows.empty else f"{len(rows)} cells (params ids {', '.join(rows['params_id'])}: pass one)"
            raise EvalbenchError(f"{name} / {task} / {protocol} / {metric}: {what}; checkpoints in that column: "
                                 f"{', '.join(sorted(set(col['checkpoint']))) or 'none'}")
    ca, cb = found[a].iloc[0], found[b].iloc[0]
    if ca["scores"] is None or cb["scores"] is None or ca["examples"] != cb["examples"]:
        raise EvalbenchError(f"{a} and {b} on {task} / {protocol} / {metric}: no per-example predictions of the same "
                             "test examples to pair (artifacts/predictions/<key>.npz under the run's storage: pass "
                             "load_results(..., storage=...)); compare their intervals (lo, hi) instead")
    return paired_test(ca["scores"], cb["scores"])


# ---------------------------------------------------------------- ranks

def _paired_column(col: pd.DataFrame, *, resamples: int, seed: int) -> dict[tuple[int, int], bool]:
    """(i, j) -> whether row i is significantly better than row j (as ``PairedTest.significant``), for
    the rows with pairable scores; one resampling of the examples for all of them, so each pair's
    bootstrap diffs equal ``paired_bootstrap``'s."""
    out: dict[tuple[int, int], bool] = {}
    for _, grp in col[col["scores"].notna()].groupby("examples"):
        idx, scores = list(grp.index), list(grp["scores"])
        if len(idx) < 2:
            continue
        binary = [_binary(x) for x in scores]
        # (k, B) resampled means, the same draws for all rows; only where some pair is not 0/1 on both sides
        means = None if all(binary) else bootstrap_means(np.stack(scores), resamples=resamples, seed=seed)
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                if binary[a] and binary[b]:  # McNemar's p is symmetric: one test per pair
                    sig = mcnemar_exact(scores[a], scores[b]) < ALPHA
                    out[(idx[a], idx[b])] = bool(sig and scores[a].mean() > scores[b].mean())
                    out[(idx[b], idx[a])] = bool(sig and scores[b].mean() > scores[a].mean())
                else:
                    out[(idx[a], idx[b])] = bool(percentile_interval((means[a] - means[b])[None, :])[0, 0] > 0)
                    out[(idx[b], idx[a])] = bool(percentile_interval((means[b] - means[a])[None, :])[0, 0] > 0)
    return out


def rank_cells(cells: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """``cells`` with ``rank`` (Int64; <NA> for metrics that are not accuracies), ``best`` (the column's
    highest mean, in a column of at least 2 checkpoints), ``tied_with_best`` (rank 1, not the best, every
    comparison with a basis) and ``rank_basis`` (module docstring). Every renderer (tables, leaderboard
    page) marks exactly these."""
    out = cells.copy()
    out["rank"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out["best"], out["tied_with_best"], out["rank_basis"] = False, False, None
    for _, col in out[out["metric"].map(is_accuracy)].groupby(COLUMN, sort=False):
        paired = _paired_column(col, resamples=resamples, seed=seed)
        top = col["mean"].max()
        for i, c in col.iterrows():
            better, bases = 0, set()
            for j, d in col.iterrows():
                if i == j or d["mean"] <= c["mean"]:  # only a higher mean can be significantly better
                    continue
                if (j, i) in paired:
                    better += paired[(j, i)]
                    bases.add("paired")
                elif all(math.isfinite(x) for x in (d["lo"], c["hi"], c["lo"], d["hi"])):
                    better += bool(d["lo"] > c["hi"])
                    bases.add("intervals")
                else:
                    bases.add("none")
            known = bases != {"none"}  # a cell no comparison could test (no interval, no predictions): no rank
            basis = max(bases, key=RANK_BASES.index) if bases else None
            out.at[i, "rank"] = 1 + better if known else pd.NA
            out.at[i, "best"] = bool(c["mean"] == top and len(col) > 1)  # a column of one has no best
            # tied only where every comparison had a basis: a tie with an untested one means "unknown"
            out.at[i, "tied_with_best"] = bool(basis not in (None, "none") and better == 0 and c["mean"] != top)
            out.at[i, "rank_basis"] = basis
    return out
