"""The leaderboard's cells with their provenance: ``statistics.cell_stats`` + ``rank_cells`` (one cell
per checkpoint, task, protocol@version, params, metric: mean ± std over seeds, a 95% interval, a
rank that ties where differences are not significant), each joined with the records it averages.

Shared by ``leaderboard.py`` (the tables) and ``report.py`` (the plots), so both show the same
numbers, without importing matplotlib. Sorted throughout: the same records give the same cells in
the same order (the leaderboard files are byte-identical).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import pandas as pd

from evalbench.core.registry import Registry
from evalbench.results.frame import records_to_frame
from evalbench.results.record import Record
from evalbench.results.statistics import cell_stats, rank_cells

# --- what kind of row a checkpoint is: baselines are marked, and not ranked against the others ---------

ROW_KINDS: Registry[Callable[[Record], bool]] = Registry("row kind", "evalbench/results/cells.py ROW_KINDS")
ROW_KINDS.register("random init")(lambda r: bool(r.checkpoint.get("random_init")))
ROW_KINDS.register("supervised reference")(
    lambda r: ((r.checkpoint.get("meta") or {}).get("pretrain") or {}).get("method") == "supervised")


def row_kind(r: Record) -> Optional[str]:
    """The baseline kind of a record's checkpoint (the first registered kind that matches), or None."""
    return next((name for name in ROW_KINDS.names() if ROW_KINDS.get(name)(r)), None)


@dataclass(frozen=True)
class Cell:
    checkpoint: str
    label: str  # the row label of the tables (name, "(random init)", "[partial: ...]")
    task: str
    protocol: str  # name@version
    params: str  # params_id
    metric: str
    mean: float
    std: float  # over seeds (nan for one run)
    n: int
    lo: float  # the 95% interval (nan where there is none)
    hi: float
    interval_kind: str  # statistics.INTERVALS: record, bootstrap-seeds, t-seeds, none
    rank: Optional[int]  # accuracy metrics: 1 + the number of checkpoints significantly better
    best: bool  # the highest mean of its column
    tied_with_best: bool  # rank 1 without the highest mean: not significantly worse than the best
    rank_basis: Optional[str]
    records: tuple[Record, ...]  # the records averaged, in seed order

    @property
    def interval(self) -> tuple[float, float]:
        return self.lo, self.hi

    @property
    def kind(self) -> Optional[str]:
        return row_kind(self.records[0])

    @property
    def seeds(self) -> tuple[Optional[int], ...]:
        return tuple(r.seed for r in self.records)


def _int_or_none(v) -> Optional[int]:
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else int(v)


def leaderboard_cells(records: Iterable[Record], *, storage: Optional[Path] = None) -> list[Cell]:
    """Every cell of the records (ok, newest per seed), sorted by (task, checkpoint, protocol, params,
    metric). ``storage``: the artifact store, where per-example predictions make paired ranks possible."""
    stats = cell_stats(records_to_frame(records, storage=storage))
    return [] if stats.empty else cells_of(records, rank_cells(stats))


def cells_of(records: Iterable[Record], ranked: pd.DataFrame) -> list[Cell]:
    """``leaderboard_cells`` of cells already ranked (``rank_cells(cell_stats(...))`` of these records)."""
    by_key = {r.key: r for r in records}
    out = []
    for row in ranked.itertuples(index=False):
        recs = sorted((by_key[k] for k in row.keys), key=lambda r: (-1 if r.seed is None else r.seed, r.key))
        out.append(Cell(
            checkpoint=row.checkpoint, label=row.checkpoint_label, task=row.task, protocol=row.protocol_id,
            params=row.params_id, metric=row.metric, mean=float(row.mean), std=float(row.std), n=int(row.n),
            lo=float(row.lo), hi=float(row.hi), interval_kind=str(row.interval), rank=_int_or_none(row.rank),
            best=bool(row.best), tied_with_best=bool(row.tied_with_best),
            rank_basis=None if row.rank_basis is None else str(row.rank_basis), records=tuple(recs)))
    return sorted(out, key=lambda c: (c.task, c.checkpoint, c.protocol, c.params, c.metric))
