"""Regression gates for CI: ``evalbench diff OLD NEW`` and ``evalbench check-targets TARGETS``.

Both compare **cells** (checkpoint, task, protocol@version, params_id, metric: the rows of the
leaderboard CSV, ``frame.leaderboard_csv``), read from a results directory (its ``records/``,
aggregated by ``statistics.cell_stats``: the mean over seeds) or from a committed leaderboard CSV
(the file, or a directory holding ``leaderboard.csv``, as ``evalbench leaderboard --out`` writes it).

Numbers are compared in the tables' units: top-1 metrics in percent, so a tolerance of 0.5 is half
a percentage point; other metrics (diagnostics, invariance) in their own units.

- ``diff``: a cell present in both whose value moved by more than ``tol`` (either way) fails, a
  cell of OLD missing from NEW fails, a cell only in NEW is listed and passes.
- ``check-targets``: each target (checkpoint, task, protocol — ``name`` or ``name@version`` —,
  metric, minimum, tolerance) fails when no cell matches it, or when a matching cell's value is
  below ``minimum - tolerance``. A targets file is YAML (``targets:`` a list of mappings, or the
  list itself) or CSV with those six columns (tolerance may be left empty: 0)::

      targets:
        - {checkpoint: supervised, task: digits, protocol: linear@2, metric: top1, minimum: 90.0, tolerance: 1.0}

Bad input (a path that is neither a results directory nor a leaderboard CSV, a CSV without the
leaderboard's columns, a malformed targets file) is an ``EvalbenchError`` (exit 2), not a failed gate.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
from tabulate import tabulate

from evalbench.core.errors import ConfigError, EvalbenchError
from evalbench.core.registry import Registry
from evalbench.core.validate import Doc, FiniteFloat, NonNegFloat, validate
from evalbench.core.yamlio import parse_yaml, read_text
from evalbench.results.frame import CSV_COLUMNS, leaderboard_csv, load_results, to_stderr
from evalbench.results.statistics import is_accuracy

KEY = ["checkpoint", "task", "protocol", "params_id", "metric"]  # one cell (the CSV's first five columns)
LEADERBOARD_FILE = "leaderboard.csv"


class GateInputError(EvalbenchError):
    """A results directory, leaderboard CSV or targets file that cannot be read as one."""


def scale(metric: str) -> float:
    """Table units: top-1 (a fraction in records) in percent; other metrics as they are."""
    return 100.0 if is_accuracy(metric) else 1.0


# ---------------------------------------------------------------- reading cells

def _read_leaderboard(path: Path) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GateInputError(f"{path}: not UTF-8 text (byte {e.start}); expected a leaderboard CSV") from None
    return _parse_leaderboard(text, where=str(path))


def _parse_leaderboard(text: str, *, where: str) -> pd.DataFrame:
    path = where
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise GateInputError(f"{path}: not a CSV ({' '.join(str(e).split())}); expected a leaderboard CSV with "
                             f"columns {','.join(CSV_COLUMNS)} (evalbench leaderboard writes it)") from None
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise GateInputError(f"{path}: not a leaderboard CSV: column(s) {', '.join(missing)} missing; expected "
                             f"{','.join(CSV_COLUMNS)} (evalbench leaderboard writes it)")
    for c in ("value", "lo", "hi", "n"):
        num = pd.to_numeric(df[c], errors="coerce")
        bad = df.index[num.isna() & ((df[c] != "") if c in ("lo", "hi") else True)]  # lo, hi may be empty
        if len(bad):
            raise GateInputError(f"{path}: line {bad[0] + 2}: column {c!r} is {df.loc[bad[0], c]!r}, not a number")
        df[c] = num
    return df[CSV_COLUMNS]


def load_cells(source: Path, *, storage: Optional[Path] = None,
               report: Callable[[str], None] = to_stderr) -> pd.DataFrame:
    """The cells (columns of the leaderboard CSV) of a results directory or a leaderboard CSV; invalid
    record files are reported through ``report`` (stderr by default, as ``load_results``)."""
    source = Path(source)
    if source.is_dir() and (source / "records").is_dir():
        text = leaderboard_csv(load_results(source, storage=storage, report=report))
        return _parse_leaderboard(text, where=str(source))
    if source.is_dir() and (source / LEADERBOARD_FILE).is_file():
        return _read_leaderboard(source / LEADERBOARD_FILE)
    if source.is_file():
        return _read_leaderboard(source)
    what = "a directory without records/ or leaderboard.csv" if source.is_dir() else "no such file or directory"
    raise GateInputError(f"{source}: {what}; pass a results directory (with records/, as `evalbench run --results` "
                         "writes it) or a leaderboard CSV (as `evalbench leaderboard` writes it)")


# ---------------------------------------------------------------- diff

@dataclass(frozen=True)
class Outcome:
    """A gate's rows (what to show) and whether it passed."""

    rows: pd.DataFrame
    passed: bool
    summary: str


def diff_cells(old: pd.DataFrame, new: pd.DataFrame, *, tol: float = 0.5) -> Outcome:
    """Cell by cell: ``status`` moved (|delta| > tol: fails), missing (fails), new (passes), same (passes)."""
    if not (tol >= 0 and math.isfinite(tol)):
        raise GateInputError(f"--tol {tol}: expected a finite number >= 0 (percentage points for top-1 metrics)")
    both = old.merge(new, on=KEY, how="outer", suffixes=("_old", "_new"), indicator=True)
    units = both["metric"].map(scale)
    delta = (both["value_new"] - both["value_old"]) * units
    status = pd.Series("same", index=both.index)
    status[both["_merge"] == "left_only"] = "missing"
    status[both["_merge"] == "right_only"] = "new"
    status[(both["_merge"] == "both") & (delta.abs() > tol + 1e-9)] = "moved"
    rows = pd.DataFrame({**{k: both[k] for k in KEY}, "old": both["value_old"] * units,
                         "new": both["value_new"] * units, "delta": delta, "status": status})
    rows = rows.sort_values(KEY, kind="stable").reset_index(drop=True)
    counts = rows["status"].value_counts()
    n = {s: int(counts.get(s, 0)) for s in ("same", "moved", "missing", "new")}
    passed = n["moved"] == 0 and n["missing"] == 0
    summary = (f"{'ok' if passed else 'FAILED'}: {len(old)} cells before, {len(new)} after; {n['same']} within "
               f"{tol:g} (pp for top-1), {n['moved']} moved, {n['missing']} missing, {n['new']} new")
    return Outcome(rows, passed, summary)


# ---------------------------------------------------------------- targets

class TargetDoc(Doc):
    checkpoint: str
    task: str
    protocol: str  # name or name@version
    metric: str
    minimum: FiniteFloat  # in table units: percent for top-1 metrics
    tolerance: NonNegFloat = 0.0


class TargetsDoc(Doc):
    targets: list[TargetDoc]


def _targets_yaml(path: Path) -> object:
    """A list of targets, or a mapping with ``targets:`` (validated by the caller)."""
    return parse_yaml(read_text(path), where=str(path))


def _targets_csv(path: Path) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    need = ["checkpoint", "task", "protocol", "metric", "minimum"]
    if not rows or any(c not in rows[0] for c in need):
        raise ConfigError(f"{path}: a targets CSV needs a header with {', '.join(need)} (and optionally tolerance) "
                          "and at least one row")
    out = []
    for line, row in enumerate(rows, start=2):
        item: dict = {k: v for k, v in row.items() if k is not None and not (k == "tolerance" and v in ("", None))}
        for k in ("minimum", "tolerance"):
            if k in item:
                try:
                    item[k] = float(item[k])
                except (TypeError, ValueError):
                    raise ConfigError(f"{path}: line {line}: {k} {item[k]!r} is not a number") from None
        out.append(item)
    return out


TARGET_READERS: Registry[Callable[[Path], object]] = Registry("targets file type", "the suffix: .yaml, .yml, .csv")
TARGET_READERS.register(".yaml")(_targets_yaml)
TARGET_READERS.register(".yml")(_targets_yaml)
TARGET_READERS.register(".csv")(_targets_csv)


def load_targets(path: Path) -> list[TargetDoc]:
    path = Path(path)
    if not path.is_file():
        raise GateInputError(f"{path}: no such targets file (YAML or CSV: checkpoint, task, protocol, metric, "
                             "minimum, tolerance)")
    try:
        reader = TARGET_READERS.get(path.suffix.lower())
    except KeyError as e:
        raise GateInputError(f"{path}: {e.args[0]}") from None
    data = reader(path)
    doc = validate(TargetsDoc, {"targets": data} if isinstance(data, list) else data, where=str(path))
    for i, t in enumerate(doc.targets):
        if is_accuracy(t.metric) and not 0 <= t.minimum <= 100:
            raise ConfigError(f"{path}: targets[{i}].minimum: got {t.minimum:g}; allowed: 0..100 (top-1 targets are "
                              "in percent)")
    return list(doc.targets)


def _matches(cells: pd.DataFrame, t: TargetDoc) -> pd.DataFrame:
    proto = cells["protocol"] if "@" in t.protocol else cells["protocol"].str.split("@").str[0]
    return cells[(cells["checkpoint"] == t.checkpoint) & (cells["task"] == t.task) & (proto == t.protocol)
                 & (cells["metric"] == t.metric)]


def check_targets(targets: list[TargetDoc], cells: pd.DataFrame) -> Outcome:
    """One row per (target, matching cell); a target without a cell is one ``missing`` row."""
    rows = []
    for t in targets:
        found = _matches(cells, t)
        base = {"checkpoint": t.checkpoint, "task": t.task, "protocol": t.protocol, "metric": t.metric,
                "minimum": t.minimum, "tolerance": t.tolerance}
        if found.empty:
            rows.append({**base, "params_id": "", "value": math.nan, "margin": math.nan, "status": "missing"})
        for _, c in found.iterrows():
            value = c["value"] * scale(t.metric)
            margin = value - (t.minimum - t.tolerance)
            rows.append({**base, "protocol": c["protocol"], "params_id": c["params_id"], "value": value,
                         "margin": margin, "status": "ok" if margin >= -1e-9 else "below"})
    df = pd.DataFrame(rows, columns=["checkpoint", "task", "protocol", "params_id", "metric", "minimum", "tolerance",
                                     "value", "margin", "status"])
    bad = df[df["status"] != "ok"]
    passed = bad.empty
    summary = (f"{'ok' if passed else 'FAILED'}: {len(targets)} targets; {int((df['status'] == 'below').sum())} "
               f"below minimum - tolerance, {int((df['status'] == 'missing').sum())} without a cell")
    return Outcome(df, passed, summary)


# ---------------------------------------------------------------- rendering

def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def render_outcome(outcome: Outcome, *, fmt: str = "plain", show_all: bool = False) -> str:
    """The rows that matter (all with ``show_all``; in diff, cells that stayed within the tolerance
    are left out otherwise), in a tabulate format, then the one-line summary."""
    from evalbench.results.tables import FORMATS

    rows = outcome.rows if show_all else outcome.rows[~outcome.rows["status"].isin(["same", "ok"])]
    tablefmt = FORMATS.get(fmt)
    if tablefmt == "csv":
        return outcome.rows.to_csv(index=False, lineterminator="\n", float_format="%.4f")
    if rows.empty:
        return outcome.summary
    body = [[_fmt(v) for v in row] for row in rows.itertuples(index=False)]
    return tabulate(body, headers=list(rows.columns), tablefmt=tablefmt, disable_numparse=True) + "\n" + outcome.summary
