"""Records -> the table a person reads: rows are checkpoints, columns are (task, protocol@version setting).

**Cells** (``statistics.cell_stats``): top-1 metrics in %, other metrics (diagnostics, invariance)
with 3 significant digits. One run: its value and its 95% interval in brackets (the record's
``details.ci95``: bootstrap over test examples, or the probe's own over episodes / images). Several
runs of a stochastic protocol (seeds, label draws): mean ± std over them and a 95% interval of the
mean — the bootstrap over test examples of the mean-over-seeds accuracy where every run stored its
per-example predictions, else a Student-t interval over seeds. Only the newest ok record per
(checkpoint, task, protocol, params, seed) counts, so re-running after fixing a checkpoint replaces
its old numbers; failed records never become numbers.

**Best and ties** (``statistics.rank_cells``, accuracy columns of two or more checkpoints): the
highest mean of a column is in bold (LaTeX ``\\textbf``, Markdown ``**``, HTML ``<b>``; ``*`` after
it in plain text); a cell marked † is tied with the best: no checkpoint is significantly better
(exact McNemar on the same test examples for single runs, paired bootstrap for means over seeds, at
5%; non-overlapping 95% intervals where predictions are missing). Unmarked cells are significantly
behind at least one checkpoint. Cells with no interval and no predictions get no mark. Every format
but CSV ends with this legend.

**Headers**: the task on one header row, ``protocol@version setting`` on the next (the setting is the
metric without its ``top1_`` prefix: ``knn@1 k20 T0.07``, ``linear@2 top1``; ``#xxxxxx``, the params
digest, after the protocol where one protocol ran with several params). Per format:

- ``plain`` and ``latex``: two header rows; LaTeX groups a task's columns under one
  ``\\multicolumn`` with a ``\\cmidrule`` (booktabs), ``±`` and the interval in ``\\scriptsize``;
- ``html``: two ``<thead>`` rows, the task cell spanning its columns (``colspan``);
- ``github`` (Markdown has one header row): ``task<br>protocol setting`` in each header cell, which
  GitHub renders as two lines;
- ``csv``: one header row ``task / protocol setting`` (one row per checkpoint, so any CSV reader
  takes it as is), cells as in the other formats, no marks and no legend.

A row whose encoder has tensors a skip left at initialisation is marked ``[partial: N tensors at
init]``; a row whose features collapsed (``diagnostics``) ``[COLLAPSED on <tasks>]``. Where a
checkpoint's pretraining method or knobs vary, they are columns before the metrics.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import pandas as pd
from tabulate import tabulate

from evalbench.core.registry import Registry
from evalbench.results.frame import records_to_frame, varying_knobs
from evalbench.results.record import Record
from evalbench.results.statistics import cell_stats, format_value, protocol_order, rank_cells

# tabulate's name for each format (ablation.py and transfer.py render through these)
FORMATS: Registry[str] = Registry("table format", "evalbench table --help")
for _fmt, _tablefmt in {"github": "github", "latex": "latex_booktabs", "html": "html", "plain": "simple"}.items():
    FORMATS.register(_fmt)(_tablefmt)
FORMATS.register("csv")("csv")

COLLAPSED = "collapsed"  # the diagnostics protocol's flag: shown on the row, not as a column
ROW_HEADER = "checkpoint (top-1 %)"
DASH = "–"  # an absent cell (LaTeX: --)
DAGGER = "†"


@dataclass(frozen=True)
class Column:
    task: str
    protocol: str  # name@version, with #params where one protocol ran with several params
    setting: str  # the metric, compact
    metric: str


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    lo: float
    hi: float
    metric: str
    best: bool  # the highest mean of an accuracy column of >= 2 checkpoints
    tied: bool  # no checkpoint significantly better (not the best)


@dataclass(frozen=True)
class Table:
    rows: list[str]  # row labels
    knobs: pd.DataFrame  # index rows: method / knob columns (may have none)
    columns: list[Column]
    cells: dict[tuple[str, int], Cell]  # (row, column index) -> cell; absent: no ok record
    ci: bool  # show intervals
    ranked: bool  # some column shows best / tie marks


def setting_label(metric: str) -> str:
    """``top1_k20_T0.07`` -> ``k20 T0.07``; ``top1`` and other metrics stay as they are."""
    return metric[len("top1_"):].replace("_", " ") if metric.startswith("top1_") else metric


def knob_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The method, and the pretraining knobs that differ between rows of the same method (DESIGN.md §5):
    one row per checkpoint label. Knobs that differ only because the methods differ are not repeated."""
    first = df.drop_duplicates("checkpoint_label").set_index("checkpoint_label")
    knob_cols = [c for c in df.columns if c.startswith("knob.")]
    per_row = {label: ({"method": r["method"], **{c[5:]: r[c] for c in knob_cols if not _missing(r[c])}}
                       if not _missing(r["method"]) else {}) for label, r in first.iterrows()}
    varying = varying_knobs(per_row.values())
    return pd.DataFrame({k: [(DASH if not kn else str(kn.get(k, DASH))) for kn in per_row.values()] for k in varying},
                        index=list(per_row))


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _column_keys(cells: pd.DataFrame, metric_order: dict[str, int],
                 params: dict[tuple[str, str], dict]) -> tuple[pd.Series, list[tuple[str, str, str]]]:
    """Each cell's protocol label (``name@version``, ``#params`` added where one protocol ran with several
    params sets on a task) and the sorted (task, protocol label, metric) columns: by task; protocols with
    accuracies first (frozen probes by name, then fine-tuning by label fraction: 1%, 10%, 100%, as the
    leaderboard page orders them), protocols without any (diagnostics) last; then the metrics in the order
    the probes report them (``statistics.protocol_order``). ``params``: (protocol_id, params_id) -> params."""
    variants = cells.groupby(["task", "protocol_id"])["params_id"].transform("nunique")
    proto = cells["protocol_id"].where(variants == 1, cells["protocol_id"] + "#" + cells["params_id"])
    metrics: dict[tuple[str, str], list[str]] = {}
    ids: dict[tuple[str, str], tuple[str, str]] = {}
    for t, p, pid, prm, m in zip(cells["task"], proto, cells["protocol_id"], cells["params_id"], cells["metric"]):
        metrics.setdefault((t, p), []).append(m)
        ids[(t, p)] = (pid, prm)
    rank = {k: protocol_order(ms, params.get(ids[k], {})) for k, ms in metrics.items()}
    keys = sorted({(t, p, m) for t, p, m in zip(cells["task"], proto, cells["metric"])},
                  key=lambda k: (k[0], rank[(k[0], k[1])], k[1], metric_order[k[2]]))
    return proto, keys


def _table_cells(cells: pd.DataFrame, proto: pd.Series, index: dict, *, ci: bool) -> dict[tuple[str, int], Cell]:
    """(row label, column index) -> Cell, marked as ``rank_cells`` decided (best, tied with the best)."""
    nan = float("nan")
    return {(c["checkpoint_label"], index[(c["task"], pr, c["metric"])]): Cell(
        c["mean"], c["std"], int(c["n"]), c["lo"] if ci else nan, c["hi"] if ci else nan, c["metric"],
        best=bool(c["best"]), tied=bool(c["tied_with_best"])) for (_, c), pr in zip(cells.iterrows(), proto)}


def build_table(records: Iterable[Record | dict], *, task: Optional[str] = None, protocol: Optional[str] = None,
                ci: bool = True, storage: Optional[Path] = None) -> Optional[Table]:
    """The table's content (None: no ok record matches). ``storage``: where the records' predictions
    files are (the run's ``--storage``); without it ties use the records' intervals."""
    df = records_to_frame(records, storage=storage)
    if task:
        df = df[df["task"] == task]
    if protocol:
        df = df[df["protocol"] == protocol.split("@")[0]]
    cells = cell_stats(df)
    return None if cells.empty else table_from_cells(df, rank_cells(cells), ci=ci)


def table_from_cells(df: pd.DataFrame, cells: pd.DataFrame, *, ci: bool = True) -> Optional[Table]:
    """The table of ranked cells (``rank_cells(cell_stats(df))``, or a slice of them: one task's) and the
    frame they come from (knob columns, metric order, label fractions); None: nothing to show."""
    flags = (cells[(cells["metric"] == COLLAPSED) & (cells["mean"] > 0)].groupby("checkpoint_label")["task"]
             .agg(lambda ts: sorted(set(ts))))
    cells = cells[cells["metric"] != COLLAPSED]
    if cells.empty:
        return None
    metric_order = {m: i for i, m in enumerate(c[len("metric."):] for c in df.columns if c.startswith("metric."))}
    params = {(pid, prm): json.loads(js) for pid, prm, js in zip(df["protocol_id"], df["params_id"], df["params"])}
    proto, keys = _column_keys(cells, metric_order, params)
    out = _table_cells(cells, proto, {k: i for i, k in enumerate(keys)}, ci=ci)
    rows = sorted(set(cells["checkpoint_label"]))
    knobs = knob_columns(df[df["checkpoint_label"].isin(rows)]).reindex(rows)
    label = {r: f"{r} [COLLAPSED on {', '.join(flags[r])}]" if r in flags.index else r for r in rows}
    return Table([label[r] for r in rows], knobs.set_axis([label[r] for r in rows]),
                 [Column(t, p, setting_label(m), m) for t, p, m in keys],
                 {(label[r], i): v for (r, i), v in out.items()}, ci, ranked=any(v.best for v in out.values()))


# ---------------------------------------------------------------- cell text per format

@dataclass(frozen=True)
class Style:
    """How one format writes a cell's parts."""

    best: Callable[[str], str]
    tied: Callable[[str], str]
    extra: Callable[[str], str]  # the ± and interval after the value
    pm: str
    best_word: str = "Bold"  # how the legend names the best mark
    absent: str = DASH  # a cell without an ok record


STYLES: Registry[Style] = Registry("table style", "evalbench table --help")
STYLES.register("plain")(Style(lambda v: v + "*", lambda v: v + DAGGER, lambda e: e, "±", best_word="*"))
STYLES.register("github")(Style(lambda v: f"**{v}**", lambda v: v + DAGGER, lambda e: e, "±"))
STYLES.register("html")(Style(lambda v: f"<b>{v}</b>", lambda v: v + DAGGER, lambda e: f"<small>{e}</small>", "±"))
STYLES.register("latex")(Style(lambda v: f"\\textbf{{{v}}}", lambda v: v + "$^\\dagger$",
                               lambda e: f"{{\\scriptsize {e}}}", "$\\pm$", absent="--"))
STYLES.register("csv")(Style(lambda v: v, lambda v: v, lambda e: e, "±"))


def cell_text(cell: Optional[Cell], style: Style) -> str:
    if cell is None:
        return style.absent
    value = format_value(cell.metric, cell.mean)
    value = style.best(value) if cell.best else style.tied(value) if cell.tied else value
    extra = []
    if cell.n >= 2:
        extra.append(f"{style.pm} {format_value(cell.metric, cell.std)}")
    if not (pd.isna(cell.lo) or pd.isna(cell.hi)):
        extra.append(f"[{format_value(cell.metric, cell.lo)}, {format_value(cell.metric, cell.hi)}]")
    return value + (" " + style.extra(" ".join(extra)) if extra else "")


def legend(table: Table, style: Style) -> list[str]:
    """What the cells and marks mean (every format but CSV); it speaks of ± only where a cell shows one."""
    seeds = any(c.n >= 2 for c in table.cells.values())
    parts = ["Top-1 in %, other metrics as stored"]
    if seeds:
        parts.append(f"{style.pm} std over seeds (label draws) where a protocol ran several")
    if table.ci:
        parts.append("[95% interval]: one run's (bootstrap over test examples, or the probe's own over episodes)"
                     + (", or that of a mean over seeds (bootstrap over test examples of the mean-over-seeds accuracy; "
                        "a t-interval over seeds without per-example predictions)" if seeds else ""))
    lines = ["; ".join(parts) + "."]
    if table.ranked:
        lines.append(f"{style.best_word}: the best of a column; {DAGGER}: tied with the best (no checkpoint significantly "
                     "better: exact McNemar test on the same test examples, paired bootstrap for means over seeds, at "
                     "5%; non-overlapping 95% intervals where predictions are missing).")
    return lines


# ---------------------------------------------------------------- renderers

Renderer = Callable[[Table], str]
RENDERERS: Registry[Renderer] = Registry("table format", "evalbench table --help")


def _body(table: Table, style: Style) -> list[list[str]]:
    return [[r, *table.knobs.loc[r].tolist(), *(cell_text(table.cells.get((r, i)), style)
                                                for i in range(len(table.columns)))] for r in table.rows]


@RENDERERS.register("csv")
def render_csv(table: Table) -> str:
    headers = [f"{c.task} / {c.protocol} {c.setting}" for c in table.columns]
    frame = pd.DataFrame(_body(table, STYLES.get("csv")), columns=["checkpoint", *table.knobs.columns, *headers])
    return frame.to_csv(index=False, lineterminator="\n")


@RENDERERS.register("github")
def render_github(table: Table) -> str:
    headers = [ROW_HEADER, *table.knobs.columns, *(f"{c.task}<br>{c.protocol} {c.setting}" for c in table.columns)]
    text = tabulate(_body(table, STYLES.get("github")), headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=("left",) * (1 + len(table.knobs.columns)) + ("right",) * len(table.columns))
    return text + "\n\n" + "\n".join(legend(table, STYLES.get("github")))


def _task_row(table: Table, first: str) -> list[str]:
    """The upper header row: the task above the first column of its group, blank above the rest."""
    out, prev = [first] + [""] * len(table.knobs.columns), None
    for c in table.columns:
        out.append(c.task if c.task != prev else "")
        prev = c.task
    return out


@RENDERERS.register("plain")
def render_plain(table: Table) -> str:
    upper = _task_row(table, "")
    lower = [ROW_HEADER, *table.knobs.columns, *(f"{c.protocol} {c.setting}" for c in table.columns)]
    headers = [f"{u}\n{l}" for u, l in zip(upper, lower)]
    text = tabulate(_body(table, STYLES.get("plain")), headers=headers, tablefmt="simple", disable_numparse=True,
                    colalign=("left",) * (1 + len(table.knobs.columns)) + ("right",) * len(table.columns))
    return text + "\n\n" + "\n".join(legend(table, STYLES.get("plain")))


def _groups(table: Table) -> list[tuple[str, int]]:
    """(task, number of consecutive columns) in column order."""
    out: list[tuple[str, int]] = []
    for c in table.columns:
        if out and out[-1][0] == c.task:
            out[-1] = (c.task, out[-1][1] + 1)
        else:
            out.append((c.task, 1))
    return out


LATEX_SPECIAL = {"–": "--", "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)
    return "{}" + out if out.startswith("[") else out  # after `\\`, a leading [ would read as its optional argument


@RENDERERS.register("latex")
def render_latex(table: Table) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), the legend as comments below it."""
    lead = 1 + len(table.knobs.columns)
    lines = [f"\\begin{{tabular}}{{{'l' * lead}{'r' * len(table.columns)}}}", "\\toprule"]
    tasks, rules, start = [""] * lead, [], lead + 1
    for task, span in _groups(table):
        tasks.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(task)}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    lines += [" & ".join(tasks) + " \\\\", " ".join(rules)]
    lower = [ROW_HEADER, *table.knobs.columns, *(f"{c.protocol} {c.setting}" for c in table.columns)]
    lines += [" & ".join(latex_escape(h) for h in lower) + " \\\\",
              "\\midrule"]
    style = STYLES.get("latex")
    for r in table.rows:
        plain = [latex_escape(r), *(latex_escape(str(v)) for v in table.knobs.loc[r].tolist())]
        cells = [cell_text(table.cells.get((r, i)), style) for i in range(len(table.columns))]
        lines.append(" & ".join(plain + cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines + [f"% {line}" for line in legend(table, style)])


@RENDERERS.register("html")
def render_html(table: Table) -> str:
    lead = 1 + len(table.knobs.columns)
    upper = ["<th></th>"] * lead + [f'<th colspan="{span}">{html.escape(task)}</th>' for task, span in _groups(table)]
    lower = [f"<th>{html.escape(h)}</th>" for h in
             [ROW_HEADER, *table.knobs.columns, *(f"{c.protocol} {c.setting}" for c in table.columns)]]
    style = STYLES.get("html")
    body = []
    for r in table.rows:
        plain = [f"<td>{html.escape(str(v))}</td>" for v in [r, *table.knobs.loc[r].tolist()]]
        cells = [f'<td style="text-align:right">{_escape_cell(cell_text(table.cells.get((r, i)), style))}</td>'
                 for i in range(len(table.columns))]
        body.append("<tr>" + "".join(plain + cells) + "</tr>")
    foot = "".join(f"<p>{html.escape(line)}</p>" for line in legend(table, style))
    return "\n".join(["<table>", "<thead>", "<tr>" + "".join(upper) + "</tr>", "<tr>" + "".join(lower) + "</tr>",
                      "</thead>", "<tbody>", *body, "</tbody>",
                      f'<tfoot><tr><td colspan="{lead + len(table.columns)}">{foot}</td></tr></tfoot>', "</table>"])


def _escape_cell(text: str) -> str:
    """Escape a cell's text but keep the markup its style added (<b>, <small>)."""
    out = html.escape(text, quote=False)
    for tag in ("b", "small"):
        out = out.replace(f"&lt;{tag}&gt;", f"<{tag}>").replace(f"&lt;/{tag}&gt;", f"</{tag}>")
    return out


def render_table(records: Iterable[Record | dict], *, fmt: str = "github", task: Optional[str] = None,
                 protocol: Optional[str] = None, ci: bool = True, storage: Optional[Path] = None) -> str:
    """The table in one format (module docstring); ``ci``: show the 95% intervals."""
    RENDERERS.get(fmt)  # an unknown format fails before any work
    return render(build_table(records, task=task, protocol=protocol, ci=ci, storage=storage), fmt=fmt)


def render(table: Optional[Table], *, fmt: str) -> str:
    """A built table (``build_table``, ``table_from_cells``) in one format."""
    return "(no ok records match)" if table is None else RENDERERS.get(fmt)(table)
