"""The leaderboard's plots (matplotlib, Agg; the only module that imports matplotlib, DESIGN.md §7.11).

- ``label-fraction``: test top-1 vs the fraction of train labels a fine-tuning protocol used
  (``semisup_1pct`` 1%, ``semisup_10pct`` 10%, ``finetune_100pct`` 100%: any ``finetune`` protocol's
  ``label_fraction``), one line per checkpoint, one panel per task; error bars: std over seeds
  (label draws), or one run's 95% interval.
- ``ablation-*``: checkpoints whose metadata carries pretraining knobs (``evalbench sweep``, or
  ``evalbench pretrain`` sidecars), grouped by sweep (else by method): two knobs that vary -> a
  heatmap of each accuracy metric; one -> the metric against it; more -> one panel per knob (the
  mean over the other knobs).
- ``tsne-*``: t-SNE (scikit-learn) of a checkpoint's test features, coloured by class, for the
  checkpoints asked for (``--tsne NAME``); the features come from the artifact store
  (``STORAGE/artifacts/features/<details.features.identity>``).

Every figure is written as PNG and SVG with the same bytes for the same records: no dates or
software versions in the metadata, a fixed ``svg.hashsalt``, seeded t-SNE on one thread.
"""
from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from evalbench.core.errors import EvalbenchError
from evalbench.core.registry import Registry
from evalbench.features.artifact import load_features
from evalbench.results.cells import Cell
from evalbench.results.record import Record
from evalbench.results.statistics import is_accuracy, label_fraction

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "figure.titlesize": 12, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False,
         "svg.hashsalt": "evalbench", "svg.fonttype": "path", "path.simplify": True}
DPI = 110
BASELINE_STYLE = {"random init": {"linestyle": "--", "color": "0.55", "marker": "s"},
                  "supervised reference": {"linestyle": ":", "color": "black", "marker": "D"}}
TSNE_MAX_POINTS = 1500  # test images per t-SNE (a fixed random subsample above this)
TSNE_PCA_DIMS = 50  # PCA before t-SNE, as is usual (van der Maaten & Hinton 2008)


@dataclass(frozen=True)
class Plot:
    name: str  # file stem under plots/
    title: str
    caption: str
    png: bytes
    svg: bytes


@dataclass(frozen=True)
class PlotContext:
    storage: Optional[Path] = None  # the artifact store (t-SNE reads features there)
    tsne: tuple[str, ...] = ()  # checkpoint names to draw a t-SNE of


PLOTS: Registry[Callable[[list[Cell], PlotContext], list[Plot]]] = Registry("plot", "evalbench/results/report.py")


def make_plots(cells: Sequence[Cell], *, storage: Optional[Path] = None, tsne: Sequence[str] = ()) -> list[Plot]:
    """Every plot the leaderboard's cells give (kinds in registry order; within a kind, sorted)."""
    ctx = PlotContext(storage=Path(storage) if storage else None, tsne=tuple(sorted(set(tsne))))
    return [p for kind in PLOTS.names() for p in PLOTS.get(kind)(list(cells), ctx)]


# --- figures and their bytes ---------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no pyplot, no global figure registry
    return fig


def render(fig: Figure) -> tuple[bytes, bytes]:
    """(PNG, SVG) bytes of a figure, the same for the same figure: no date, no software tag, fixed ids."""
    with matplotlib.rc_context(STYLE):
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png.getvalue(), svg.getvalue()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _pct(v: float) -> float:
    return 100.0 * v


def _errors(c: Cell) -> tuple[float, float]:
    """(below, above) the mean, in %: std over seeds, else one run's 95% interval, else none."""
    if c.n >= 2:
        return _pct(c.std), _pct(c.std)
    lo, hi = c.interval
    return (0.0, 0.0) if math.isnan(lo) else (_pct(c.mean - lo), _pct(hi - c.mean))


# --- accuracy vs label fraction ------------------------------------------------------------------------


def _fraction(r: Record) -> Optional[float]:
    return label_fraction(r.protocol["params"]) if r.protocol.get("implementation") == "finetune" else None


def label_fraction_points(cells: list[Cell]) -> dict[str, dict[str, list[tuple[float, Cell]]]]:
    """The label-fraction plot's points: task -> checkpoint -> [(label fraction, its top-1 cell)], by fraction."""
    out: dict[str, dict[str, list[tuple[float, Cell]]]] = {}
    for c in cells:
        f = _fraction(c.records[0])
        if c.metric == "top1" and f is not None:
            out.setdefault(c.task, {}).setdefault(c.checkpoint, []).append((f, c))
    return {t: {name: sorted(pts, key=lambda p: p[0]) for name, pts in sorted(by.items())} for t, by in sorted(out.items())}


@PLOTS.register("1-label-fraction")
def label_fraction_plot(cells: list[Cell], ctx: PlotContext) -> list[Plot]:
    points = label_fraction_points(cells)
    if not points:
        return []
    tuned = [c for by in points.values() for pts in by.values() for _, c in pts]
    tasks = list(points)
    names = sorted({c.checkpoint for c in tuned})
    colors = _colors(names)
    fig = _figure(5.6 * len(tasks) + 2.6, 4.0)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        for name, pts in points[task].items():
            kind = pts[0][1].kind
            style = dict(BASELINE_STYLE.get(kind, {"linestyle": "-", "marker": "o", "color": colors[name]}))
            errs = np.array([_errors(c) for _, c in pts]).T
            label = name + (f" ({kind})" if kind else "")
            ax.errorbar([100 * f for f, _ in pts], [_pct(c.mean) for _, c in pts], yerr=errs, label=label,
                        capsize=3, linewidth=1.6, markersize=5, **style)
        fractions = sorted({f for pts in points[task].values() for f, _ in pts})
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([100 * f for f in fractions]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
        ax.set_xlim(100 * fractions[0] / 1.6, 100 * fractions[-1] * 1.6)
        ax.set_xlabel("labelled training images (% of the train split, log scale)")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_title(f"{task}: fine-tuned on a fraction of the labels")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="checkpoint", frameon=False)
    png, svg = render(fig)
    n_seeds = sorted({c.n for c in tuned})
    caption = ("Test top-1 after fine-tuning the whole encoder on 1%, 10% and 100% of the train labels "
               "(semisup_1pct, semisup_10pct, finetune_100pct; lr chosen on val). Points: mean over label draws "
               f"({'/'.join(map(str, n_seeds))} per point); error bars: std over draws, or one run's 95% "
               "bootstrap interval. Dashed grey: random-init baseline; dotted black: supervised reference.")
    return [Plot("label-fraction", "Accuracy vs label fraction", caption, png, svg)]


# --- ablations from pretraining knobs -------------------------------------------------------------------

NOT_A_KNOB = {"seed"}  # pretraining seeds replicate a point; they are averaged, not plotted


def _knobs(r: Record) -> dict:
    pre = (r.checkpoint.get("meta") or {}).get("pretrain") or {}
    return {k: v for k, v in (pre.get("knobs") or {}).items() if k not in NOT_A_KNOB}


def _group(r: Record) -> Optional[str]:
    meta = r.checkpoint.get("meta") or {}
    if (meta.get("sweep") or {}).get("name"):
        return f"sweep {meta['sweep']['name']}"
    method = (meta.get("pretrain") or {}).get("method")
    return f"{method} pretraining" if method and _knobs(r) else None


def _value_key(v) -> tuple:
    """Knob values in order: numbers by value, then anything else by its JSON text."""
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, json.dumps(v))


def _label(v) -> str:
    if v is None:
        return "not set"
    return f"{v:g}" if isinstance(v, float) else (json.dumps(v) if isinstance(v, (list, dict)) else str(v))


@dataclass(frozen=True)
class Point:
    knobs: tuple  # the varying knobs' values, as JSON texts
    mean: float  # % over the checkpoints (pretraining seeds) of this point
    std: float
    n: int


def varying_knobs(recs: list[Record]) -> list[str]:
    """The pretraining knobs (not the seed) whose values differ between the records' checkpoints, sorted."""
    per_ckpt = {r.checkpoint["name"]: _knobs(r) for r in recs}
    keys = sorted({k for kn in per_ckpt.values() for k in kn})
    return [k for k in keys if len({json.dumps(kn.get(k), sort_keys=True) for kn in per_ckpt.values()}) > 1]


def ablation_points(group_cells: list[Cell], varying: list[str]) -> dict[tuple, Point]:
    """One point per combination of the varying knobs' values (JSON texts): the mean in % over its
    checkpoints (one per pretraining seed) and their std."""
    by_point: dict[tuple, list[float]] = {}
    for c in group_cells:
        kn = _knobs(c.records[0])
        by_point.setdefault(tuple(json.dumps(kn.get(k), sort_keys=True) for k in varying), []).append(_pct(c.mean))
    out = {}
    for key, vals in by_point.items():
        arr = np.asarray(vals)
        out[key] = Point(key, float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"), len(arr))
    return out


def _heatmap(ax, fig, points: dict[tuple, Point], varying: list[str], title: str) -> None:
    ys = sorted({p[0] for p in points}, key=lambda t: _value_key(json.loads(t)))
    xs = sorted({p[1] for p in points}, key=lambda t: _value_key(json.loads(t)))
    grid = np.full((len(ys), len(xs)), np.nan)
    for (y, x), p in points.items():
        grid[ys.index(y), xs.index(x)] = p.mean
    finite = grid[np.isfinite(grid)]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.9")  # a combination the sweep did not run
    image = ax.imshow(grid, cmap=cmap, vmin=finite.min(), vmax=finite.max(), aspect="auto")
    for yi, xi in zip(*np.nonzero(~np.isfinite(grid))):
        ax.text(xi, yi, "not run", ha="center", va="center", fontsize=9, color="0.4")
    mid = (finite.min() + finite.max()) / 2
    for (y, x), p in sorted(points.items()):
        text = f"{p.mean:.1f}" + (f"\n±{p.std:.1f}" if p.n > 1 else "")
        ax.text(xs.index(x), ys.index(y), text, ha="center", va="center", fontsize=10,
                color="black" if p.mean > mid else "white")
    ax.set_xticks(range(len(xs)), [_label(json.loads(x)) for x in xs])
    ax.set_yticks(range(len(ys)), [_label(json.loads(y)) for y in ys])
    ax.set_xlabel(varying[1])
    ax.set_ylabel(varying[0])
    ax.grid(False)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="test top-1 (%)", shrink=0.9)


def _knob_line(ax, points: dict[tuple, Point], varying: list[str], i: int, title: str, color) -> None:
    """The metric against knob ``i``: the mean over points with that value (over the other knobs, if any)."""
    by_value: dict[str, list[float]] = {}
    for key, p in points.items():
        by_value.setdefault(key[i], []).append(p.mean)
    values = sorted(by_value, key=lambda t: _value_key(json.loads(t)))
    means = [float(np.mean(by_value[v])) for v in values]
    errs = [float(np.std(by_value[v], ddof=1)) if len(by_value[v]) > 1 else 0.0 for v in values]
    if len(varying) == 1:  # one knob: each point's own spread over its pretraining seeds
        errs = [0.0 if math.isnan(points[(v,)].std) else points[(v,)].std for v in values]
    ax.errorbar(range(len(values)), means, yerr=errs, marker="o", capsize=3, linewidth=1.6, color=color)
    ax.set_xticks(range(len(values)), [_label(json.loads(v)) for v in values])
    ax.set_xlabel(varying[i] + ("" if len(varying) == 1 else " (mean over the other knobs)"))
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)


@PLOTS.register("2-ablation")
def ablation_plots(cells: list[Cell], ctx: PlotContext) -> list[Plot]:
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        g = _group(c.records[0])
        if g:
            groups.setdefault(g, []).append(c)
    plots = []
    for group in sorted(groups):
        varying = varying_knobs([c.records[0] for c in groups[group]])
        if not varying:
            continue
        accuracy = [c for c in groups[group] if is_accuracy(c.metric)]
        for task in sorted({c.task for c in accuracy}):
            task_cells = [c for c in accuracy if c.task == task]
            if len({json.dumps([_knobs(c.records[0]).get(k) for k in varying]) for c in task_cells}) < 2:
                continue  # one point of the grid on this task: nothing to compare
            panels = sorted({(c.protocol, c.params, c.metric) for c in task_cells})
            plots.append(_ablation_figure(group, task, varying, panels, task_cells))
    return plots


def _ablation_figure(group: str, task: str, varying: list[str], panels: list[tuple], task_cells: list[Cell]) -> Plot:
    two = len(varying) == 2
    per_panel = 1 if len(varying) <= 2 else len(varying)
    cols = len(panels) if per_panel == 1 else per_panel
    rows = 1 if per_panel == 1 else len(panels)
    fig = _figure(4.6 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    colors = _colors([str(p) for p in panels])
    for i, panel in enumerate(panels):
        pc = [c for c in task_cells if (c.protocol, c.params, c.metric) == panel]
        points = ablation_points(pc, varying)
        title = f"{panel[0]} {panel[2]}"
        if two:
            _heatmap(axes[0][i], fig, points, varying, title)
        else:
            for j in range(per_panel):
                ax = axes[0][i] if per_panel == 1 else axes[i][j]
                _knob_line(ax, points, varying, j, title, colors[str(panel)])
    fig.suptitle(f"{group} on {task}: {' × '.join(varying)}")
    png, svg = render(fig)
    what = ("heatmap of test top-1 (%) over the two knobs that vary" if two else
            "test top-1 (%) against the knob that varies" if len(varying) == 1 else
            "test top-1 (%) against each knob that varies, averaged over the others")
    caption = (f"Ablation ({group}, evaluated on {task}): {what}; each point is the mean over its pretraining "
               "seeds (± their std where there are several).")
    return Plot(f"ablation-{slug(group)}-{slug(task)}", f"Ablation: {group} on {task}", caption, png, svg)


# --- t-SNE of test features ----------------------------------------------------------------------------


def _features_ids(records: list[Record], name: str) -> dict[str, str]:
    """task -> the identity-view features identity of checkpoint ``name``."""
    out = {}
    for r in records:
        f = r.details.get("features") or {}
        if r.checkpoint["name"] == name and f.get("identity") and f.get("view", "identity") == "identity":
            out.setdefault(r.task["name"], f["identity"])
    return out


def tsne_embedding(x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2): PCA to 50 dims, then exact-seeded Barnes-Hut t-SNE on one thread (same input,
    same output bytes)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, dtype=np.float64)
    with threadpool_limits(limits=1):
        if x.shape[1] > TSNE_PCA_DIMS and len(x) > TSNE_PCA_DIMS:
            x = PCA(n_components=TSNE_PCA_DIMS, svd_solver="full", random_state=seed).fit_transform(x)
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(x)


@PLOTS.register("3-tsne")
def tsne_plots(cells: list[Cell], ctx: PlotContext) -> list[Plot]:
    records = sorted({r.key: r for c in cells for r in c.records}.values(), key=lambda r: r.key)
    known = sorted({r.checkpoint["name"] for r in records})
    plots = []
    for name in ctx.tsne:
        ids = _features_ids(records, name)
        if not ids:
            raise EvalbenchError(f"--tsne {name!r}: no ok record of that checkpoint has extracted features; known "
                                 f"checkpoints: {', '.join(known) or '(none)'}")
        plots.append(_tsne_figure(name, ids, ctx))
    return plots


def _load_test(storage: Optional[Path], name: str, task: str, identity: str) -> tuple[np.ndarray, np.ndarray]:
    if storage is None:
        raise EvalbenchError("t-SNE needs the artifact store: pass --storage (default: the results directory)")
    directory = storage / "artifacts" / "features" / identity
    feats = load_features(directory)
    if feats is None or "test" not in feats.x:
        raise EvalbenchError(f"--tsne {name!r}: the test features of {task} are not in {directory}; pass the "
                             "--storage the run used, or run the suite again to extract them")
    return feats.x["test"], feats.y["test"]


def _tsne_figure(name: str, ids: dict[str, str], ctx: PlotContext) -> Plot:
    tasks = sorted(ids)
    fig = _figure(5.0 * len(tasks) + 1.2, 4.6)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    sizes = []
    for ax, task in zip(axes, tasks):
        x, y = _load_test(ctx.storage, name, task, ids[task])
        if len(x) > TSNE_MAX_POINTS:
            keep = np.sort(np.random.default_rng(0).permutation(len(x))[:TSNE_MAX_POINTS])
            x, y = x[keep], y[keep]
        sizes.append(len(x))
        emb = tsne_embedding(x)
        classes = sorted(int(c) for c in np.unique(y))
        colors = _colors([str(c) for c in classes])
        for c in classes:
            m = y == c
            ax.scatter(emb[m, 0], emb[m, 1], s=9, color=colors[str(c)], label=str(c), alpha=0.85, linewidths=0)
        ax.set_title(f"{task}: {len(x)} test images")
        ax.set_xlabel("t-SNE 1 (arbitrary units)")
        ax.set_ylabel("t-SNE 2 (arbitrary units)")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=1.6,
                  ncols=1 if len(classes) <= 12 else 2)
    fig.suptitle(f"t-SNE of {name}'s test features, coloured by class")
    png, svg = render(fig)
    caption = (f"t-SNE (scikit-learn; PCA to {TSNE_PCA_DIMS} dims first, perplexity 30, seed 0) of the pooled "
               f"test features of {name} ({', '.join(f'{t}: {n}' for t, n in zip(tasks, sizes))} images), "
               "coloured by the true class. Distances between clusters are not meaningful in t-SNE.")
    return Plot(f"tsne-{slug(name)}", f"t-SNE: {name}", caption, png, svg)
