"""Records -> tables: rows are checkpoints, columns are `task / protocol metric`, cells mean ± std
over seeds (top-1 in %) where a stochastic protocol ran with several seeds; a deterministic
protocol runs once and its cells carry no ±, but the run's 95% interval in brackets (its record's
``details.ci95``: bootstrap over test examples, or over episodes for few-shot). A row whose encoder has tensors a skip left at
initialisation is marked ``[partial: N tensors at init]``. Only the newest ok record per (checkpoint, task, protocol, params, seed)
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


def _partial_mark(r: dict) -> str:
    """A row whose encoder kept tensors at initialisation (the suite's skip_missing) says how many."""
    load = ((r.get("details") or {}).get("features") or {}).get("load") or {}
    # records before issue 8 listed absent BatchNorm counters as skipped: they change no feature
    n = sum(not k.endswith("num_batches_tracked") for k in load.get("skipped") or ())
    return f" [partial: {n} tensor{'s' if n > 1 else ''} at init]" if n else ""


def records_frame(records: Iterable[Record | dict]) -> pd.DataFrame:
    """Long form: one row per (ok record, metric). A deterministic protocol's seed is None."""
    rows = []
    for r in records:
        r = r.to_dict() if isinstance(r, Record) else r
        if r.get("status") != "ok":
            continue
        c, p = r["checkpoint"], r["protocol"]
        row_label = c["name"] + (" (random init)" if c.get("random_init") else "") + _partial_mark(r)
        pretrain = (c.get("meta") or {}).get("pretrain") or {}
        knobs = {"method": pretrain.get("method"), **(pretrain.get("knobs") or {})} if pretrain else {}
        ci = (r.get("details") or {}).get("ci95") or {}
        for metric, value in r["metrics"].items():
            lo, hi = ci.get(metric) or (float("nan"), float("nan"))
            rows.append({"checkpoint": row_label, "task": r["task"]["name"], "protocol": f"{p['name']}@{p['version']}",
                         "params": _params_id(p["params"]), "metric": metric, "seed": r["seed"],
                         "value": float(value), "created": r["created"], "knobs": knobs, "lo": lo, "hi": hi})
    cols = ["checkpoint", "task", "protocol", "params", "metric", "seed", "value", "created", "knobs", "lo", "hi"]
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
    agg = df.groupby(["checkpoint", "column"], sort=True).agg(
        mean=("value", "mean"), std=("value", "std"), count=("value", "count"),
        lo=("lo", "mean"), hi=("hi", "mean")).reset_index()  # lo, hi: the 95% interval (shown for one run)
    # columns grouped by task / protocol; metrics keep the order the probe reported them in
    metric_rank = {m: i for i, m in enumerate(dict.fromkeys(df["metric"]))}
    order = sorted(df["column"].unique(), key=lambda c: (c.rsplit(" ", 1)[0], metric_rank[c.rsplit(" ", 1)[1]]))
    agg["column"] = pd.Categorical(agg["column"], categories=order, ordered=True)
    return agg


COLLAPSED = "collapsed"  # the diagnostics protocol's flag: shown on the row, not as a column


def _cell(mean: float, std: float, n: int, *, metric: str, lo: float = float("nan"), hi: float = float("nan")) -> str:
    """Top-1 metrics in %, other metrics (diagnostics) with 3 significant digits; ± only over several seeds;
    one run's 95% interval (the record's details.ci95) in brackets after its value, where it has one."""
    fmt = (lambda v: f"{100 * v:.1f}") if metric.startswith("top1") else (lambda v: f"{v:.3g}")
    if n >= 2:
        return f"{fmt(mean)} ± {fmt(std)}"
    return fmt(mean) if pd.isna(lo) or pd.isna(hi) else f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def knob_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The method, and the pretraining knobs that differ between rows of the same method (DESIGN.md §5):
    one row per checkpoint. Knobs that differ only because the methods differ are not repeated."""
    per_row = df.drop_duplicates("checkpoint").set_index("checkpoint")["knobs"]
    if not any(per_row):
        return pd.DataFrame(index=per_row.index)
    by_method: dict[str, list[dict]] = {}
    for kn in per_row:
        if kn:
            by_method.setdefault(str(kn.get("method")), []).append(kn)
    keys = list(dict.fromkeys(k for kn in per_row for k in kn if k != "method"))
    varying = ["method"] + [k for k in keys if any(len({repr(kn.get(k)) for kn in group}) > 1
                                                   for group in by_method.values())]
    return pd.DataFrame({k: [("–" if not kn else str(kn.get(k, "–"))) for kn in per_row] for k in varying},
                        index=per_row.index)


def render_table(records: Iterable[Record | dict], *, fmt: str = "github", task: Optional[str] = None,
                 protocol: Optional[str] = None, ci: bool = True) -> str:
    """The table; ``ci``: a single run's cell shows its 95% interval beside the value."""
    frame = records_frame(records)
    summary = summary_frame(frame, task=task, protocol=protocol)
    if summary.empty:
        return "(no ok records match)"
    metric = summary["column"].astype(str).str.rsplit(" ", n=1).str[1]
    collapsed = summary[(metric == COLLAPSED) & (summary["mean"] > 0)]
    flags = collapsed.groupby("checkpoint")["column"].agg(lambda cs: sorted({str(c).split(" / ")[0] for c in cs}))
    summary = summary[metric != COLLAPSED].assign(metric=metric[metric != COLLAPSED])
    nan = float("nan")
    summary["cell"] = [_cell(m, s, n, metric=mt, lo=lo if ci else nan, hi=hi if ci else nan) for m, s, n, mt, lo, hi in
                       zip(summary["mean"], summary["std"], summary["count"], summary["metric"], summary["lo"],
                           summary["hi"])]
    wide = summary.pivot(index="checkpoint", columns="column", values="cell")
    wide = wide.astype(object).where(wide.notna(), "–")
    wide.columns = [str(c) for c in wide.columns]
    wide.columns.name = None
    wide = knob_columns(frame[frame["checkpoint"].isin(wide.index)]).join(wide, how="right")
    wide.index = [f"{c} [COLLAPSED on {', '.join(flags[c])}]" if c in flags.index else c for c in wide.index]
    tablefmt = FORMATS.get(fmt)
    if tablefmt == "csv":
        return wide.to_csv(index_label="checkpoint")
    return tabulate(wide, headers=["checkpoint (top-1 %)", *wide.columns], tablefmt=tablefmt, disable_numparse=True,
                    colalign=("left",) + ("right",) * len(wide.columns))
