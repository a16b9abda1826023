"""Records -> tables: rows are checkpoints, columns are `task / protocol metric`, cells mean ± std
over seeds (top-1 in %) where a stochastic protocol ran with several seeds; a deterministic
protocol runs once and its cells carry no ±. Only the newest ok record per (checkpoint, task, protocol, params, seed)
counts, so re-running after fixing a checkpoint replaces its old numbers.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable, Optional

import pandas as pd
from tabulate import tabulate

from evalbench.core.registry import Registry
from evalbench.results.record import Record

FORMATS: Registry[str] = Registry("table format", "evalbench table --help")
for _fmt, _tablefmt in {"github": "github", "latex": "latex_booktabs", "html": "html", "plain": "simple"}.items():
    FORMATS.register(_fmt)(_tablefmt)
FORMATS.register("csv")("csv")


def _params_id(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:6]


def records_frame(records: Iterable[Record | dict]) -> pd.DataFrame:
    """Long form: one row per (ok record, metric). A deterministic protocol's seed is None."""
    rows = []
    for r in records:
        r = r.to_dict() if isinstance(r, Record) else r
        if r.get("status") != "ok":
            continue
        c, p = r["checkpoint"], r["protocol"]
        row_label = c["name"] + (" (random init)" if c.get("random_init") else "")
        for metric, value in r["metrics"].items():
            rows.append({"checkpoint": row_label, "task": r["task"]["name"], "protocol": f"{p['name']}@{p['version']}",
                         "params": _params_id(p["params"]), "metric": metric, "seed": r["seed"],
                         "value": float(value), "created": r["created"]})
    cols = ["checkpoint", "task", "protocol", "params", "metric", "seed", "value", "created"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values("created").drop_duplicates(cols[:6], keep="last")


def summary_frame(df: pd.DataFrame, *, task: Optional[str] = None, protocol: Optional[str] = None) -> pd.DataFrame:
    """Wide form with mean, std and n over seeds per (checkpoint, column)."""
    if task:
        df = df[df["task"] == task]
    if protocol:
        df = df[df["protocol"].str.split("@").str[0] == protocol.split("@")[0]]
    if df.empty:
        return pd.DataFrame()
    variants = df.groupby(["task", "protocol"])["params"].transform("nunique")
    proto = df["protocol"].where(variants == 1, df["protocol"] + "#" + df["params"])
    df = df.assign(column=df["task"] + " / " + proto + " " + df["metric"])
    agg = df.groupby(["checkpoint", "column"], sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    # columns grouped by task / protocol; metrics keep the order the probe reported them in
    metric_rank = {m: i for i, m in enumerate(dict.fromkeys(df["metric"]))}
    order = sorted(df["column"].unique(), key=lambda c: (c.rsplit(" ", 1)[0], metric_rank[c.rsplit(" ", 1)[1]]))
    agg["column"] = pd.Categorical(agg["column"], categories=order, ordered=True)
    return agg


def _cell(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f}" if n < 2 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def render_table(records: Iterable[Record | dict], *, fmt: str = "github", task: Optional[str] = None,
                 protocol: Optional[str] = None) -> str:
    summary = summary_frame(records_frame(records), task=task, protocol=protocol)
    if summary.empty:
        return "(no ok records match)"
    summary["cell"] = [_cell(m, s, n) for m, s, n in zip(summary["mean"], summary["std"], summary["count"])]
    wide = summary.pivot(index="checkpoint", columns="column", values="cell")
    wide = wide.astype(object).where(wide.notna(), "–")
    wide.columns = [str(c) for c in wide.columns]
    wide.columns.name = None
    tablefmt = FORMATS.get(fmt)
    if tablefmt == "csv":
        return wide.to_csv()
    return tabulate(wide, headers=["checkpoint (top-1 %)", *wide.columns], tablefmt=tablefmt, disable_numparse=True,
                    colalign=("left",) + ("right",) * len(wide.columns))
