"""The ablation table of a sweep (DESIGN.md §5): one row per grid point, the knobs that vary as
columns, each metric as mean ± std over pretraining seeds (where seeds vary), its difference
to the base point, and the random-init row of the same architecture. A point whose features
collapsed (the diagnostics protocol) is flagged."""
from __future__ import annotations

from typing import Iterable, Optional

import pandas as pd
from tabulate import tabulate

from evalbench.results.record import Record
from evalbench.results.tables import FORMATS

DIAGNOSTIC_FLAG = "collapsed"
FAILED = "(failed)"  # the pseudo-column of a failed record


def ablation_frame(records: Iterable[Record], *, sweep: Optional[str] = None) -> pd.DataFrame:
    """Long form: one row per (ok record of a sweep checkpoint, metric)."""
    rows = []
    for r in records:
        s = r.checkpoint.get("meta", {}).get("sweep")
        if not s or (sweep and s.get("name") != sweep):
            continue
        if not r.ok:  # a failed point keeps its row, marked with the failure
            rows.append({"point": -1 if s["point"] is None else s["point"], "label": s["label"], "base": s["base"],
                         "overrides": s["overrides"], "seed": s["seed"], "column": FAILED,
                         "value": float("nan"), "error": (r.error or "")})
            continue
        for metric, value in r.metrics.items():
            rows.append({"point": -1 if s["point"] is None else s["point"], "label": s["label"], "base": s["base"],
                         "overrides": s["overrides"], "seed": s["seed"],
                         "column": f"{r.task['name']} / {r.protocol['name']} {metric}", "value": float(value),
                         "error": None})
    return pd.DataFrame(rows, columns=["point", "label", "base", "overrides", "seed", "column", "value", "error"])


def _cell(mean: float, std: float, n: int, *, percent: bool) -> str:
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{scale * mean:.{digits}f}"
    return text if n < 2 or pd.isna(std) else f"{text} ± {scale * std:.{digits}f}"


def _is_percent(column: str) -> bool:
    return "top1" in column


def render_ablation(records: Iterable[Record], *, fmt: str = "github", sweep: Optional[str] = None) -> str:
    df = ablation_frame(records, sweep=sweep)
    if df.empty:
        return "(no records of a sweep)"
    failures = df[df["column"] == FAILED].groupby("point")["error"].first()
    df = pd.concat([df[df["column"] != FAILED], df[(df["column"] == FAILED) & ~df["point"].isin(
        df.loc[df["column"] != FAILED, "point"])]])
    varying = sorted({k for o in df["overrides"] for k in o})  # the knobs the grid sets
    agg = df.groupby(["point", "column"])["value"].agg(["mean", "std", "count"]).reset_index()
    base_points = df.loc[df["base"], "point"].unique()
    base = agg[agg["point"] == base_points[0]].set_index("column")["mean"] if len(base_points) else None
    points = df.drop_duplicates("point").set_index("point").sort_index()
    # grouped by task, then protocol; metrics in the order the probe reported them (a stable sort)
    columns = sorted((c for c in dict.fromkeys(df["column"]) if c != FAILED and not c.endswith(f" {DIAGNOSTIC_FLAG}")),
                     key=lambda c: (c.split(" / ")[0], c.split(" / ")[1].split(" ")[0]))
    table = []
    for point, info in points.iterrows():
        row = {"point": "random init" if point == -1 else f"p{point}" + (" (base)" if info["base"] else "")}
        for k in varying:  # a point that does not set a knob has the base config's value
            row[k] = "–" if point == -1 else str(info["overrides"].get(k, "base"))
        cells = agg[agg["point"] == point].set_index("column")
        for c in columns:
            if c not in cells.index:
                row[c] = "–"
                continue
            m, s, n = cells.loc[c, "mean"], cells.loc[c, "std"], int(cells.loc[c, "count"])
            row[c] = _cell(m, s, n, percent=_is_percent(c))
            if base is not None and c in base.index and not info["base"] and _is_percent(c):
                row[c] += f" ({100 * (m - base[c]):+.1f})"
        flags = [c for c in cells.index if str(c).endswith(f" {DIAGNOSTIC_FLAG}") and cells.loc[c, "mean"] > 0]
        if flags:
            row["point"] += " [collapsed]"
        if point in failures.index:
            parts = str(failures[point]).split(": ")  # "<kind> failed: <ErrorType>: <message>"
            row["point"] += f" [failed: {parts[1] if len(parts) > 1 else parts[0]}]"
        table.append(row)
    frame = pd.DataFrame(table)
    tablefmt = FORMATS.get(fmt)
    if tablefmt == "csv":
        return frame.to_csv(index=False)
    note = "cells: mean ± std over pretraining seeds; (±x.x): difference to the base point, in points of top-1"
    return tabulate(frame, headers="keys", tablefmt=tablefmt, showindex=False, disable_numparse=True) + "\n" + note
