"""`evalbench leaderboard`: the published leaderboard of a results directory.

Writes, into ``--out``:

- ``leaderboard.md``: one section per task (``tables.table_from_cells``, the same tables ``evalbench table``
  prints), its baseline rows named, then the plots (PNG links) with their captions;
- ``leaderboard.csv``: ``frame.cells_csv`` (``leaderboard_csv``'s bytes; one row per cell; what ``evalbench diff`` reads);
- ``index.html``: a static page (inline CSS and JS, nothing fetched): one table per task with
  protocol@version over its metrics, baseline rows marked (random init; supervised reference: a
  checkpoint pretrained with ``method: supervised``), each column's best value in bold and the
  values not significantly below it underlined (``statistics.rank_cells``), sortable by a click on a
  column header, filterable with the text box, and the provenance of every number: a hover title
  per cell (seeds, interval, checkpoint hash, code version, chosen hyperparameters, params, test
  examples, created, record keys) and a details row per checkpoint (every record);
- ``plots/*.png`` and ``plots/*.svg`` (``report.py``), shown in the page.

The same records always give the same bytes: no clock, sorted iteration, fixed float formats,
times only as the records carry them. ``--check`` compares what the records give with the files in
``--out`` and prints a unified diff (exit 1) where they differ.
"""
from __future__ import annotations

import difflib
import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Iterable, Optional, Sequence

import pandas as pd

from evalbench.core.atomic import write_bytes
from evalbench.results.cells import ROW_KINDS, Cell, cells_of
from evalbench.results.frame import cells_csv, params_id, partial_mark, records_to_frame, varying_knobs
from evalbench.results.record import Record
from evalbench.results.statistics import cell_stats, format_value, is_accuracy, protocol_order, rank_cells
from evalbench.results.tables import COLLAPSED, render, table_from_cells  # COLLAPSED: a row flag, not a column
from evalbench.specs.suite import Suite

MARKDOWN, CSV, HTML, PLOTS_DIR = "leaderboard.md", "leaderboard.csv", "index.html", "plots"
TITLE = "evalbench leaderboard"
CHOSEN = {"l2": "L2", "lr": "lr"}  # details keys of hyperparameters chosen on val -> how the page names them
KIND_ORDER = {name: i for i, name in enumerate(ROW_KINDS.names())}  # baselines first, then the rest by name
INTERVAL_TEXT = {
    "record": "95% interval of the run",
    "bootstrap-seeds": "95% bootstrap interval over test examples of the mean over seeds",
    "t-seeds": "95% Student-t interval over seeds",
    "none": "no interval",
}


# --- which records ---------------------------------------------------------------------------------------


def suite_records(records: Iterable[Record], suite: Suite) -> list[Record]:
    """The records of a suite's evaluations: its checkpoints (by name), tasks (name and version),
    protocols (name, version and params, after the suite's overrides) and, for a stochastic
    protocol, its seeds."""
    names = {c.name for c in suite.checkpoints}
    tasks = {(t.name, t.version) for t in suite.tasks}
    protocols = {(p.name, p.version, json.dumps(p.params, sort_keys=True)) for p in suite.protocols}
    seeds = set(suite.seeds)
    return [r for r in records
            if r.checkpoint["name"] in names and (r.task["name"], r.task["version"]) in tasks
            and (r.protocol["name"], r.protocol["version"], json.dumps(r.protocol["params"], sort_keys=True)) in protocols
            and (r.seed is None or r.seed in seeds)]


# --- formatting --------------------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _weights(r: Record) -> str:
    c = r.checkpoint
    if c.get("random_init"):
        return f"random init (seed {c.get('init_seed')})"
    if c.get("sha256"):
        return f"sha256 {c['sha256']}"
    stage = (c.get("weights") or {}).get("stage")
    return f"trained by pretrain stage {stage}" if stage else json.dumps(c.get("weights"), sort_keys=True)


def _code(records: Iterable[Record]) -> str:
    versions = sorted({f"evalbench {r.env.get('evalbench')}" + (f" (git {r.env['git']})" if r.env.get("git") else "")
                       for r in records})
    return ", ".join(versions)


def _chosen(r: Record) -> str:
    """Hyperparameters chosen on val (linear's L2, fine-tuning's lr, few-shot's L2 per shots)."""
    parts = []
    for key, name in CHOSEN.items():
        v = r.details.get(key)
        if isinstance(v, dict):
            parts += [f"{name}[{k}]={x:g}" for k, x in sorted(v.items(), key=lambda kv: (len(kv[0]), kv[0]))
                      if isinstance(x, (int, float))]  # few-shot: one per number of shots, 1, 5, 20
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{name}={v:g}")
    return ", ".join(parts)


def _n_test(r: Record) -> Optional[int]:
    n = (r.details.get("predictions") or {}).get("n")
    return int(n) if isinstance(n, int) else None


def _interval_text(c: Cell) -> str:
    if c.interval_kind == "record":
        boot = set((c.records[0].details.get("ci_bootstrap") or {}).get("metrics") or ())
        how = "bootstrap over test examples" if c.metric in boot else "the protocol's own (over episodes or images)"
        return f"{INTERVAL_TEXT['record']}: {how}"
    return INTERVAL_TEXT.get(c.interval_kind, c.interval_kind)


def provenance(c: Cell) -> str:
    """What a cell's number is and where it comes from (the page's hover title), one fact per line."""
    r0 = c.records[0]
    value = format_value(c.metric, c.mean) + (" %" if is_accuracy(c.metric) else "")
    lines = [f"{c.protocol} {c.metric} on {c.task}@{r0.task['version']}: {value}"]
    if c.n >= 2:
        lines.append(f"mean ± std over {c.n} seeds: ± {format_value(c.metric, c.std)}")
    if not math.isnan(c.lo):
        lines.append(f"{_interval_text(c)}: [{format_value(c.metric, c.lo)}, {format_value(c.metric, c.hi)}]")
    seeds = [s for s in c.seeds if s is not None]
    lines.append(f"seeds: {', '.join(map(str, seeds))}" if seeds else "seed: none (deterministic protocol, one run)")
    if c.rank is not None:
        lines.append(f"rank {c.rank} (1 + checkpoints significantly better; basis: {c.rank_basis})")
    lines.append(f"checkpoint: {r0.checkpoint['arch']}, {_weights(r0)}")
    lines.append(f"code: {_code(c.records)}")
    chosen = [(r, x) for r, x in ((r, _chosen(r)) for r in c.records) if x]
    if chosen:
        lines.append("chosen on val: " + ("; ".join(f"seed {r.seed}: {x}" for r, x in chosen)
                                          if len(chosen) > 1 else chosen[0][1]))
    lines.append(f"params #{c.params}: {json.dumps(r0.protocol['params'], sort_keys=True)}")
    ns = sorted({n for n in map(_n_test, c.records) if n is not None})
    if ns:
        lines.append(f"test examples: {', '.join(map(str, ns))}")
    lines.append(f"created: {', '.join(sorted({r.created for r in c.records}))}")
    lines.append(f"records: {', '.join(r.key for r in c.records)}")
    return "\n".join(lines)


# --- the page's tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    protocol: str
    params: str
    metric: str


@dataclass(frozen=True)
class Row:
    name: str
    kind: Optional[str]
    records: tuple[Record, ...]  # every record of this checkpoint on the task (the details row)


def _protocol_order(cells: Sequence[Cell]) -> dict[tuple[str, str], tuple]:
    """(protocol, params) -> its place (``statistics.protocol_order``, then name and params)."""
    metrics: dict[tuple[str, str], list[str]] = {}
    for c in cells:
        metrics.setdefault((c.protocol, c.params), []).append(c.metric)
    return {key: (*protocol_order(ms, next(c for c in cells if (c.protocol, c.params) == key).records[0].protocol["params"]),
                  *key) for key, ms in metrics.items()}


def _columns(cells: Sequence[Cell]) -> list[Column]:
    """Grouped by protocol (then params); metrics in the order the protocol reported them."""
    order: dict[str, int] = {}
    for c in cells:
        for i, m in enumerate(c.records[0].metrics):
            order.setdefault(m, i)
    protocols = _protocol_order(cells)
    cols = {Column(c.protocol, c.params, c.metric) for c in cells if c.metric != COLLAPSED}
    return sorted(cols, key=lambda k: (protocols[(k.protocol, k.params)], order.get(k.metric, 0), k.metric))


def _rows(cells: Sequence[Cell]) -> list[Row]:
    recs: dict[str, dict[str, Record]] = {}
    for c in cells:
        recs.setdefault(c.checkpoint, {}).update({r.key: r for r in c.records})
    rows = [Row(name, next(c.kind for c in cells if c.checkpoint == name),
                tuple(sorted(rs.values(), key=lambda r: (r.protocol["name"], r.protocol["version"], r.key))))
            for name, rs in recs.items()]
    return sorted(rows, key=lambda r: (KIND_ORDER.get(r.kind, len(KIND_ORDER)), r.name))


def _knobs(r: Record) -> dict:
    pre = (r.checkpoint.get("meta") or {}).get("pretrain") or {}
    return {"method": pre.get("method"), **(pre.get("knobs") or {})} if pre else {}


def knob_columns(rows: Sequence[Row]) -> list[str]:
    """``method`` and the pretraining knobs that differ between rows of the same method (``frame.varying_knobs``,
    as the tables)."""
    return varying_knobs(_knobs(row.records[0]) for row in rows)


def _knob_text(v: object) -> str:
    return "–" if v is None else (f"{v:g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict))
                                  else str(v))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _badges(row: Row, flags: Sequence[str]) -> str:
    out = []
    if row.kind:
        cls = "badge ref" if row.kind == "supervised reference" else "badge"
        out.append(f'<span class="{cls}">baseline: {_e(row.kind)}</span>')
    partial = partial_mark(row.records[0].to_dict()).strip()
    if partial:
        out.append(f'<span class="badge flag">{_e(partial.strip("[]"))}</span>')
    out += [f'<span class="badge flag">{_e(f)}</span>' for f in flags]
    return "".join(out)


def _cell_td(c: Optional[Cell]) -> str:
    if c is None:
        return '<td class="na" data-v="">–</td>'
    classes = ["best"] * c.best + ["tied"] * c.tied_with_best
    extra = ""
    if c.n >= 2:
        extra = f' <span class="sd">± {format_value(c.metric, c.std)}</span>'
    elif not math.isnan(c.lo):
        extra = f' <span class="ci">[{format_value(c.metric, c.lo)}, {format_value(c.metric, c.hi)}]</span>'
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return (f'<td{cls} data-v="{c.mean!r}" title="{_e(provenance(c))}"><span class="v">{format_value(c.metric, c.mean)}'
            f'</span>{extra}</td>')


def _details_row(row: Row, span: int) -> str:
    r0 = row.records[0]
    c = r0.checkpoint
    facts = [("architecture", c["arch"]), ("weights", _weights(r0)),
             ("preprocessing", json.dumps(c.get("data"), sort_keys=True))]
    if c.get("path"):
        facts.append(("path", c["path"]))
    pre = (c.get("meta") or {}).get("pretrain")
    if pre:
        facts.append(("pretraining", json.dumps(pre, sort_keys=True)))
    facts.append(("code", _code(row.records)))
    dl = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in facts)
    head = "".join(f"<th>{h}</th>" for h in ("protocol", "params", "seed", "metrics", "chosen on val", "test examples",
                                             "code", "created", "record"))
    body = []
    for r in row.records:
        metrics = ", ".join(f"{m}={format_value(m, float(v))}" for m, v in r.metrics.items())
        cells = [f"{r.protocol['name']}@{r.protocol['version']}",
                 f'<span title="{_e(json.dumps(r.protocol["params"], sort_keys=True))}">#{_e(params_id(r.protocol["params"]))}</span>',
                 "–" if r.seed is None else str(r.seed), _e(metrics), _e(_chosen(r) or "–"),
                 _e(_n_test(r) or "–"), _e(_code([r])), _e(r.created), f"<code>{_e(r.key)}</code>"]
        body.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>\n")
    return (f'<tr class="prov" hidden><td colspan="{span}">\n<dl>{dl}</dl>\n<table><thead><tr>{head}</tr></thead><tbody>\n'
            + "".join(body) + "</tbody></table></td></tr>")


def section_html(task: str, cells: Sequence[Cell]) -> str:
    """One task's table: two header rows (protocol@version, then metric), one <tbody> per checkpoint
    (its row and its hidden provenance row, so sorting moves both)."""
    columns, rows = _columns(cells), _rows(cells)
    knobs = knob_columns(rows)
    by = {(c.checkpoint, Column(c.protocol, c.params, c.metric)): c for c in cells}
    variants = {p: len({k.params for k in columns if k.protocol == p}) for p in {k.protocol for k in columns}}
    groups: list[tuple[tuple[str, str], int]] = []
    for k in columns:
        if groups and groups[-1][0] == (k.protocol, k.params):
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append(((k.protocol, k.params), 1))
    top = ['<th rowspan="2" class="name sortable" data-col="0" data-type="text">checkpoint</th>']
    top += [f'<th rowspan="2" class="knob sortable" data-col="{1 + i}" data-type="text">{_e(k)}</th>'
            for i, k in enumerate(knobs)]
    for (proto, params), span in groups:
        name, ver = proto.split("@")
        suffix = f" #{params}" if variants[proto] > 1 else ""
        top.append(f'<th colspan="{span}" class="group">{_e(name)} <span class="ver">v{_e(ver)}{_e(suffix)}</span></th>')
    second = [f'<th class="sortable" data-col="{1 + len(knobs) + i}" data-type="num">{_e(k.metric)}</th>'
              for i, k in enumerate(columns)]
    bodies = []
    for row in rows:
        flags = [f"collapsed ({c.protocol})" for c in cells
                 if c.checkpoint == row.name and c.metric == COLLAPSED and c.mean > 0]
        kn = _knobs(row.records[0])
        knob_tds = "".join(f'<td class="knob">{_e(_knob_text(kn.get(k)) if kn else "–")}</td>' for k in knobs)
        search = " ".join([row.name, row.kind or "", "baseline" if row.kind else ""] +
                          [f"{k}={_knob_text(v)}" for k, v in sorted(kn.items())])
        cls = f' class="entry baseline-{_slug(row.kind)}"' if row.kind else ' class="entry"'
        tds = "\n".join(_cell_td(by.get((row.name, k))) for k in columns)
        bodies.append(f'<tbody{cls} data-search="{_e(search)}">\n<tr class="main"><td class="name" data-v="{_e(row.name)}">'
                      f'<button type="button" aria-expanded="false" title="show the provenance of this row">&#9656;'
                      f'</button>{_e(row.name)}{_badges(row, flags)}</td>{knob_tds}\n{tds}</tr>\n'
                      f'{_details_row(row, 1 + len(knobs) + len(columns))}\n</tbody>')
    version = cells[0].records[0].task["version"]
    return (f'<section id="task-{_slug(task)}"><h2>{_e(task)} <span class="ver">v{_e(version)}</span></h2>\n'
            f'<div class="scroll"><table class="lb" data-task="{_e(task)}"><thead><tr>{"".join(top)}</tr>'
            f'<tr>{"".join(second)}</tr></thead>\n' + "\n".join(bodies) + "\n</table></div></section>\n")


# --- the documents -----------------------------------------------------------------------------------------


def summary_line(records: Sequence[Record], cells: Sequence[Cell]) -> str:
    """What the leaderboard is made of, from the records alone (no clock)."""
    ok = [r for r in records if r.ok]
    if not cells:
        return f"No ok records ({len(records) - len(ok)} failed): nothing to rank yet."
    tasks = sorted({c.task for c in cells})
    protocols = sorted({c.protocol for c in cells})
    newest = max((r.created for r in ok), default="–")
    return (f"{len(ok)} ok records ({len(records) - len(ok)} failed) of {len({c.checkpoint for c in cells})} "
            f"checkpoints on {len(tasks)} task{'s' * (len(tasks) != 1)} ({', '.join(tasks)}) with "
            f"{', '.join(protocols)}; newest record {newest}; {_code(ok)}.")


LEGEND = ("Cells: top-1 accuracy in % (diagnostics as numbers); a single run shows its 95% interval in brackets, "
          "several seeds (label draws) mean ± std. <b>Bold</b>: the best top-1 of a column; dotted underline: not "
          "significantly below it (paired bootstrap on the same test examples where predictions are stored, "
          "else non-overlapping 95% intervals). Shaded rows are baselines (random init; supervised reference). "
          "Hover a cell for its provenance; click &#9656; for every record of a row; click a header to sort.")


def render_html(records: Sequence[Record], cells: Sequence[Cell], plots: Sequence, *, title: str = TITLE) -> str:
    static = resources.files("evalbench.results").joinpath("static")
    tasks = sorted({c.task for c in cells})
    sections = "".join(section_html(t, [c for c in cells if c.task == t]) for t in tasks)
    nav = " ".join(f'<a href="#task-{_slug(t)}">{_e(t)}</a>' for t in tasks) + (
        ' <a href="#plots">plots</a>' if plots else "")
    figures = "".join(
        f'<figure id="plot-{_e(p.name)}"><h3>{_e(p.title)}</h3><a href="{PLOTS_DIR}/{_e(p.name)}.svg">'
        f'<img src="{PLOTS_DIR}/{_e(p.name)}.svg" alt="{_e(p.title)}"></a><figcaption>{_e(p.caption)} '
        f'(<a href="{PLOTS_DIR}/{_e(p.name)}.png">PNG</a>, <a href="{PLOTS_DIR}/{_e(p.name)}.svg">SVG</a>)'
        "</figcaption></figure>\n" for p in plots)
    page = Template(static.joinpath("leaderboard.html").read_text(encoding="utf-8"))
    return page.substitute(
        title=_e(title), css=static.joinpath("leaderboard.css").read_text(encoding="utf-8"),
        js=static.joinpath("leaderboard.js").read_text(encoding="utf-8"),
        summary=f'<p class="muted">{_e(summary_line(records, cells))}</p>', legend=LEGEND, nav=nav,
        sections=sections or "<p>(no ok records)</p>\n",
        plots=f'<section id="plots"><h2>Plots</h2>\n{figures}</section>\n' if plots else "")


def render_markdown(records: Sequence[Record], cells: Sequence[Cell], plots: Sequence, *, title: str = TITLE,
                    frame: pd.DataFrame, ranked: pd.DataFrame) -> str:
    """``frame``, ``ranked``: the records' ``load_results`` frame and its ranked cells (``build``), whose
    per-task slices make each section's table (``tables.table_from_cells``, the ``evalbench table`` renderer)."""
    out = [f"# {title}", "", summary_line(records, cells), "",
           "Cells: top-1 accuracy in % (diagnostics as numbers); a single run's 95% interval in brackets, "
           "mean ± std over seeds (label draws). The page (`index.html`) has the provenance of every number.", ""]
    for task in sorted({c.task for c in cells}):
        tc = [c for c in cells if c.task == task]
        out += [f"## {task} (v{tc[0].records[0].task['version']})", "",
                render(table_from_cells(frame[frame["task"] == task], ranked[ranked["task"] == task]), fmt="github"), ""]
        baselines = sorted({(c.checkpoint, c.kind) for c in tc if c.kind})
        if baselines:
            out += ["Baselines: " + ", ".join(f"`{n}` ({k})" for n, k in baselines) + ".", ""]
    if plots:
        out += ["## Plots", ""]
        for p in plots:
            out += [f"### {p.title}", "", f"![{p.title}]({PLOTS_DIR}/{p.name}.png)", "", p.caption, ""]
    return "\n".join(out).rstrip("\n") + "\n"


def build(records: Iterable[Record], *, storage: Optional[Path] = None, plots: bool = True,
          tsne: Sequence[str] = (), title: str = TITLE) -> dict[str, bytes]:
    """Every file of the leaderboard: relative path -> bytes (the same records give the same bytes)."""
    records = sorted(records, key=lambda r: r.key)
    frame = records_to_frame(records, storage=storage)
    stats = cell_stats(frame)  # once for the cells, the tables and the CSV
    ranked = rank_cells(stats) if not stats.empty else stats
    cells = cells_of(records, ranked) if not stats.empty else []
    figures = []
    if plots:
        from evalbench.results.report import make_plots  # matplotlib stays out of `evalbench table`

        figures = make_plots(cells, storage=storage, tsne=tsne)
    files = {MARKDOWN: render_markdown(records, cells, figures, title=title, frame=frame, ranked=ranked).encode(),
             CSV: cells_csv(stats).encode(),
             HTML: render_html(records, cells, figures, title=title).encode()}
    for p in figures:
        files[f"{PLOTS_DIR}/{p.name}.png"] = p.png
        files[f"{PLOTS_DIR}/{p.name}.svg"] = p.svg
    return dict(sorted(files.items()))


def _existing(out: Path) -> set[str]:
    """The leaderboard files already in ``out`` (ours: the three documents and plots/*.png|svg)."""
    found = {name for name in (MARKDOWN, CSV, HTML) if (out / name).is_file()}
    plots = out / PLOTS_DIR
    if plots.is_dir():
        found |= {f"{PLOTS_DIR}/{p.name}" for p in plots.iterdir() if p.suffix in (".png", ".svg") and p.is_file()}
    return found


def write(out: Path, files: dict[str, bytes]) -> list[str]:
    """Write the files (atomically, each) and remove plots the records no longer give; the names written."""
    out = Path(out)
    for stale in sorted(_existing(out) - set(files)):
        (out / stale).unlink()
    for name, data in files.items():
        target = out / name
        if not (target.is_file() and target.read_bytes() == data):
            write_bytes(target, data)
    return list(files)


MAX_DIFF_LINES = 400  # per file: a changed plot's SVG differs in many lines; the start says enough


def check(out: Path, files: dict[str, bytes]) -> str:
    """A unified diff (committed -> what the records give) of every file that differs; "" when all match."""
    out = Path(out)
    parts = []
    for name in sorted(set(files) | _existing(out)):
        path = out / name
        old = path.read_bytes() if path.is_file() else None
        new = files.get(name)
        if old == new:
            continue
        if new is None:
            parts.append(f"only in {out}: {name} (the records give no such file; regenerate to remove it)\n")
            continue
        if name.endswith(".png"):
            parts.append(f"binary file {path} {'differs' if old is not None else 'is missing'}\n")
            continue
        diff = list(difflib.unified_diff((old or b"").decode("utf-8", "replace").splitlines(keepends=True),
                                         new.decode("utf-8").splitlines(keepends=True),
                                         fromfile=f"{path}" if old is not None else "/dev/null",
                                         tofile=f"{name} (from the records)"))
        if len(diff) > MAX_DIFF_LINES:
            diff = diff[:MAX_DIFF_LINES] + [f"... ({len(diff) - MAX_DIFF_LINES} more diff lines)\n"]
        parts.append("".join(line if line.endswith("\n") else line + "\n" for line in diff))
    return "".join(parts)
