"""The transfer table (DESIGN.md §3): source task -> target task for the linear probe, k-NN and the
fine-tuning protocols, from stored records.

A checkpoint's source is the task it was pretrained on: ``pretrained_on:`` in the suite's checkpoint
entry (kept in ``checkpoint.meta.pretrained_on``), else the pretraining metadata evalbench wrote
(``checkpoint.meta.pretrain.task``: a sweep's checkpoints, a sidecar JSON). Rows are (source,
checkpoint, protocol); columns are the target tasks and the mean over the targets other than the
source (the in-domain cell stays in its column, marked ``*``). A cell is the mean over seeds (draws)
of the protocol's first metric, top-1 in %.
"""
from __future__ import annotations

from typing import Iterable, Optional

import pandas as pd
from tabulate import tabulate

from evalbench.core.errors import EvalbenchError
from evalbench.protocols.finetune import is_finetune
from evalbench.results.record import Record
from evalbench.results.frame import params_id
from evalbench.results.tables import FORMATS

FROZEN = ("linear", "knn")  # probe implementations shown beside every fine-tuning protocol
MEAN = "mean (targets ≠ source)"


def source_of(checkpoint: dict) -> Optional[str]:
    """The task a record's checkpoint was pretrained on, or None (random init, unknown)."""
    meta = checkpoint.get("meta") or {}
    return meta.get("pretrained_on") or (meta.get("pretrain") or {}).get("task")


def transfer_frame(records: Iterable[Record | dict], *, source: Optional[str] = None) -> pd.DataFrame:
    """Long form: (source, checkpoint, protocol, target, seed, value, created), newest record per seed."""
    rows = []
    for r in records:
        r = r.to_dict() if isinstance(r, Record) else r
        p = r["protocol"]
        if r.get("status") != "ok" or not r["metrics"] or not (p["implementation"] in FROZEN or
                                                               is_finetune(p["implementation"])):
            continue
        src = source_of(r["checkpoint"])
        if src is None:
            continue
        metric = next(iter(r["metrics"]))  # top1 (linear, fine-tuning), top1_k20_T0.07 (k-NN)
        rows.append({"source": src, "checkpoint": r["checkpoint"]["name"], "protocol": f"{p['name']} {metric}",
                     "params": params_id(p["params"]), "target": r["task"]["name"], "seed": r["seed"],
                     "value": float(r["metrics"][metric]), "created": r["created"]})
    df = pd.DataFrame(rows, columns=["source", "checkpoint", "protocol", "params", "target", "seed", "value",
                                     "created"])
    if df.empty:
        raise EvalbenchError("no record's checkpoint names the task it was pretrained on; set `pretrained_on: TASK` "
                             "in the suite's checkpoint entry (evalbench-pretrained checkpoints carry it already)")
    if source is not None and source not in set(df["source"]):
        raise EvalbenchError(f"transfer source {source!r}: no checkpoint was pretrained on it; sources in these "
                             f"records: {', '.join(sorted(set(df['source'])))}")
    if source is not None:
        df = df[df["source"] == source]
    # one protocol run with other params (a suite's overrides) is another row, as in tables.py
    variants = df.groupby("protocol")["params"].transform("nunique")
    df = df.assign(protocol=df["protocol"].where(variants == 1, df["protocol"] + " #" + df["params"]))
    return df.sort_values("created").drop_duplicates(["source", "checkpoint", "protocol", "target", "seed"],
                                                     keep="last")


def transfer_matrix(records: Iterable[Record | dict], *, source: Optional[str] = None) -> pd.DataFrame:
    """Wide form: index (source, checkpoint, protocol), columns targets + MEAN; values in [0, 1]."""
    df = transfer_frame(records, source=source)
    wide = df.groupby(["source", "checkpoint", "protocol", "target"])["value"].mean().unstack("target")
    others = [[t != s for t in wide.columns] for s in wide.index.get_level_values("source")]
    wide[MEAN] = [row[mask].mean() if any(mask) else float("nan")
                  for (_, row), mask in zip(wide.iterrows(), others)]
    return wide


def render_transfer(records: Iterable[Record | dict], *, fmt: str = "github", source: Optional[str] = None) -> str:
    wide = transfer_matrix(records, source=source)
    targets = [c for c in wide.columns if c != MEAN]
    out = pd.DataFrame(index=wide.index)
    for t in targets:
        out[t] = [("–" if pd.isna(v) else f"{100 * v:.1f}" + (" *" if s == t else ""))
                  for (s, _, _), v in zip(wide.index, wide[t])]
    out[MEAN] = ["–" if pd.isna(v) else f"{100 * v:.1f}" for v in wide[MEAN]]
    out.index = [f"{s} → {c} / {p}" for s, c, p in out.index]  # no "|": it would split a markdown cell
    tablefmt = FORMATS.get(fmt)
    if tablefmt == "csv":
        return out.to_csv(index_label="source → checkpoint / protocol")
    return tabulate(out, headers=["source → checkpoint / protocol (top-1 %; * in-domain)", *out.columns],
                    tablefmt=tablefmt, disable_numparse=True, colalign=("left",) + ("right",) * len(out.columns))
