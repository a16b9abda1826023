"""Records as a pandas DataFrame (the Python API for notebooks, DESIGN.md §6) and the leaderboard CSV.

``evalbench.load_results(path)`` reads a results directory (``RecordStore``: ``path/records/*.json``;
invalid files are reported on stderr as ``evalbench table`` reports them, and listed in
``df.attrs["problems"]``) and returns one row per record, ok and failed alike, with flat columns:

Identity and checkpoint
  ``key``                the record's key (its probe/train stage identity, the file name)
  ``checkpoint``         the checkpoint's name in the suite
  ``checkpoint_label``   the row label the tables show: name, `` (random init)``, ``[partial: N tensors at init]``
  ``arch``               FAMILY:NAME
  ``sha256``             the weights file's sha256 (None: random init or weights a stage produced)
  ``random_init``        True for a random-weights baseline
  ``pretrained_on``      the task the checkpoint was pretrained on (suite ``pretrained_on:`` or evalbench's
                         pretraining metadata), or None
  ``method``             the pretraining method (evalbench-pretrained checkpoints), or None
  ``knob.<name>``        every pretraining knob of the method (DESIGN.md §5), None where another method's
Task and protocol
  ``task``, ``task_version``
  ``protocol``           the protocol's name; ``protocol_version`` its version; ``protocol_id`` ``name@version``
  ``implementation``     the probe / training implementation; ``stochastic``; ``view``
  ``params``             the protocol's params as canonical JSON (sorted keys)
  ``params_id``          a 6-hex digest of ``params`` (the ``#xxxxxx`` the tables append when params vary)
  ``seed``               the seed (label draw for fine-tuning); <NA> for a deterministic protocol
Outcome
  ``status``             ``ok`` or ``error``; ``error`` the one-line message; ``failed_stage`` its stage
  ``latest``             True for the newest ok record of its (checkpoint, task, protocol_id, params_id, seed);
                         the tables and statistics read only these
  ``metric.<name>``      each metric (top-1 as a fraction in [0, 1]); NaN where a record lacks it
  ``ci95_lo.<name>``, ``ci95_hi.<name>``  the record's 95% interval (``details.ci95``)
  ``ci95_source.<name>`` ``bootstrap`` (percentile bootstrap over test examples, ``protocols/bootstrap.py``)
                         or ``probe`` (the probe's own: few-shot over episodes, invariance over images)
  ``chosen.<name>``      hyperparameters chosen on val (``details``: linear's ``l2``, fine-tuning's ``lr``,
                         few-shot's ``l2.<shots>``)
  ``timing_s.<stage>``   seconds per stage
Provenance
  ``evalbench_version``, ``git`` (revision when run from a checkout), ``torch``, ``device``, ``host``
  ``created``            ISO 8601 time the record was written
  ``predictions``        absolute path of the per-example test predictions file
                         (``artifacts/predictions/<key>.npz`` under the storage), or None
  ``predictions_n``      how many test examples it holds

``leaderboard_csv(df)`` aggregates a frame into cells (``statistics.cell_stats``) and writes the CSV
that ``evalbench leaderboard`` commits and ``evalbench diff`` reads: columns
``checkpoint,task,protocol,params_id,metric,value,lo,hi,n`` (protocol = ``name@version``; value, lo,
hi as the records store them, top-1 as a fraction, 6 decimals; n = records averaged), rows sorted,
``\\n`` line ends: the same records always give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import pandas as pd

from evalbench.results.record import Record

CHOSEN = ("l2", "lr")  # details keys that hold a hyperparameter chosen on val (a dict: one per setting)
SEED_GROUP = ["checkpoint", "task", "protocol_id", "params_id", "seed"]  # one evaluation, repeated over time
CSV_COLUMNS = ["checkpoint", "task", "protocol", "params_id", "metric", "value", "lo", "hi", "n"]
FIXED_COLUMNS = ["key", "checkpoint", "checkpoint_label", "arch", "sha256", "random_init", "pretrained_on", "method",
                 "task", "task_version", "protocol", "protocol_version", "protocol_id", "implementation", "stochastic",
                 "view", "params", "params_id", "seed", "status", "error", "failed_stage", "latest",
                 "evalbench_version", "git", "torch", "device", "host", "created", "predictions", "predictions_n"]
PREFIXES = ("knob.", "metric.", "ci95_lo.", "ci95_hi.", "ci95_source.", "chosen.", "timing_s.")


def params_id(params: dict) -> str:
    """The 6-hex digest of a protocol's params (canonical JSON), as the tables' ``#xxxxxx``."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:6]


def partial_mark(r: dict) -> str:
    """A row whose encoder kept tensors at initialisation (the suite's skip_missing) says how many."""
    skipped = _map(_map(_map(r.get("details")).get("features")).get("load")).get("skipped")
    # records before issue 8 listed absent BatchNorm counters as skipped: they change no feature
    n = sum(isinstance(k, str) and not k.endswith("num_batches_tracked") for k in
            (skipped if isinstance(skipped, list) else ()))
    return f" [partial: {n} tensor{'s' if n > 1 else ''} at init]" if n else ""


def _map(x: object) -> dict:
    """A nested part of a record as a mapping ({} where a damaged or older record has something else:
    ``Record.from_dict`` checks only the parts every reader needs)."""
    return x if isinstance(x, dict) else {}


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _chosen(details: dict) -> dict:
    out = {}
    for name in CHOSEN:
        v = details.get(name)
        if isinstance(v, dict):  # few-shot: one chosen L2 per number of shots
            out.update({f"chosen.{name}.{k}": x for k, x in v.items() if _number(x)})
        elif _number(v):
            out[f"chosen.{name}"] = v
    return out


def _intervals(details: dict) -> dict:
    boot = _map(details.get("ci_bootstrap")).get("metrics")
    boot = set(boot) if isinstance(boot, list) and all(isinstance(m, str) for m in boot) else set()
    out = {}
    for m, bounds in _map(details.get("ci95")).items():
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(_number(b) for b in bounds):
            out[f"ci95_lo.{m}"], out[f"ci95_hi.{m}"] = float(bounds[0]), float(bounds[1])
            out[f"ci95_source.{m}"] = "bootstrap" if m in boot else "probe"
    return out


def record_row(r: Record | dict, *, storage: Optional[Path] = None) -> dict:
    """One flat row (the columns of the module docstring) of one record; tolerant of the minimal dicts
    tests build (absent parts are None)."""
    r = r.to_dict() if isinstance(r, Record) else r
    c, t, p = r["checkpoint"], r["task"], r["protocol"]
    details, env = _map(r.get("details")), _map(r.get("env"))
    meta = _map(c.get("meta"))
    pretrain = _map(meta.get("pretrain"))
    preds = _map(details.get("predictions"))
    file = preds.get("file")
    pred_path = str((Path(storage) / file).resolve()) if storage is not None and isinstance(file, str) and file else None
    seed = r.get("seed")
    return {
        "key": r.get("key"), "checkpoint": c["name"],
        "checkpoint_label": c["name"] + (" (random init)" if c.get("random_init") else "") + partial_mark(r),
        "arch": c.get("arch"), "sha256": c.get("sha256"), "random_init": bool(c.get("random_init", False)),
        "pretrained_on": meta.get("pretrained_on") or pretrain.get("task"), "method": pretrain.get("method"),
        **{f"knob.{k}": v for k, v in (pretrain.get("knobs") or {}).items()},
        "task": t["name"], "task_version": t.get("version"),
        "protocol": p["name"], "protocol_version": p.get("version"), "protocol_id": f"{p['name']}@{p.get('version')}",
        "implementation": p.get("implementation"), "stochastic": p.get("stochastic"), "view": p.get("view"),
        "params": json.dumps(p.get("params") or {}, sort_keys=True), "params_id": params_id(p.get("params") or {}),
        "seed": seed, "status": r.get("status"), "error": r.get("error"),
        "failed_stage": _map(details.get("failed_stage")).get("stage"),
        **{f"metric.{m}": float(v) for m, v in (r.get("metrics") or {}).items() if v is not None},
        **_intervals(details), **_chosen(details),
        **{f"timing_s.{k}": float(v) for k, v in _map(r.get("timing_s")).items() if _number(v)},
        "evalbench_version": env.get("evalbench"), "git": env.get("git"), "torch": env.get("torch"),
        "device": env.get("device"), "host": env.get("host"), "created": r.get("created"),
        "predictions": pred_path, "predictions_n": preds.get("n") if _number(preds.get("n")) else None,
    }


def records_to_frame(records: Iterable[Record | dict], *, storage: Optional[Path] = None) -> pd.DataFrame:
    """The frame of ``load_results`` from records in memory; ``storage`` (the artifact store root) makes
    the ``predictions`` column an absolute path (None without it)."""
    rows = [record_row(r, storage=storage) for r in records]
    # grouped by prefix; within one, in the order the records report them (k-NN: k=20 before k=200)
    seen = list(dict.fromkeys(k for row in rows for k in row if k.startswith(PREFIXES)))
    extra = sorted(seen, key=lambda k: PREFIXES.index(k[: k.index(".") + 1]))
    df = pd.DataFrame(rows, columns=FIXED_COLUMNS + extra)
    for k in extra:
        if k.startswith("knob."):  # as stored (an int knob stays an int beside rows without it)
            df[k] = pd.Series([row.get(k) for row in rows], dtype=object)
    df["seed"] = df["seed"].astype("Int64")
    df["predictions_n"] = df["predictions_n"].astype("Int64")
    df = df.sort_values(["created", "key"], na_position="first", kind="stable").reset_index(drop=True)
    ok = df["status"] == "ok"
    newest = df[ok].drop_duplicates(SEED_GROUP, keep="last").index  # seed <NA> groups as one value
    df["latest"] = df.index.isin(newest)
    return df


def problem_lines(problems: dict[str, str]) -> list[str]:
    """How ``evalbench table`` reports files that are not valid records (one line each)."""
    return [f"evalbench: skipped {path}: not a valid record ({why}); `evalbench run` evaluates its job again"
            for path, why in sorted(problems.items())]


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def load_results(path: str | Path, *, storage: Optional[str | Path] = None,
                 report: Callable[[str], None] = to_stderr) -> pd.DataFrame:
    """Every record under ``path/records/`` as one row (module docstring: the columns).

    ``storage``: the artifact store the run used (``--storage``; default: ``path``), where the
    per-example predictions live. Invalid record files are skipped and reported through ``report``
    (stderr by default) and kept in ``df.attrs["problems"]`` (path -> reason). A directory without
    ``records/`` is an error (nothing to read), not an empty frame.
    """
    records, problems = stored_records(Path(path))
    df = records_to_frame(records, storage=Path(storage) if storage is not None else Path(path))
    for line in problem_lines(problems):
        report(line)
    df.attrs["problems"] = problems
    return df


def varying_knobs(knobs: Iterable[dict]) -> list[str]:
    """The knob columns of a table (DESIGN.md §5): ``method`` and, sorted, the pretraining knobs whose
    values differ between checkpoints of the same method (knobs that differ only because the methods
    differ are not repeated); [] where no checkpoint has pretraining metadata. ``knobs``: one dict per
    checkpoint, ``{"method": ..., knob: value}``, or ``{}``."""
    knobs = list(knobs)
    if not any(knobs):
        return []
    by_method: dict[str, list[dict]] = {}
    for kn in knobs:
        if kn:
            by_method.setdefault(str(kn.get("method")), []).append(kn)
    keys = sorted({k for kn in knobs for k in kn if k != "method"})
    same = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731  (lists and dicts compare by value)
    return ["method"] + [k for k in keys if any(len({same(kn.get(k)) for kn in group}) > 1 for group in by_method.values())]


def stored_records(path: Path) -> tuple[list[Record], dict[str, str]]:
    """The valid records of a results directory and its invalid record files (path -> why); a directory
    without ``records/`` is an error that says which directory to pass."""
    from evalbench.core.errors import EvalbenchError
    from evalbench.results.store import RecordStore

    store = RecordStore(Path(path))
    if not store.records_dir.is_dir():
        raise EvalbenchError(f"no records under {store.records_dir}; run `evalbench run --results {path}` first, "
                             "or pass the results directory that holds records/")
    return list(store.records()), dict(store.problems)


def metric_names(df: pd.DataFrame) -> list[str]:
    """The metrics present in a frame, in column order."""
    return [c[len("metric."):] for c in df.columns if c.startswith("metric.")]


def leaderboard_csv(df: pd.DataFrame) -> str:
    """The committed leaderboard CSV (module docstring): one row per cell of ``statistics.cell_stats``."""
    from evalbench.results.statistics import cell_stats

    return cells_csv(cell_stats(df))


def cells_csv(cells: pd.DataFrame) -> str:
    """``leaderboard_csv`` of cells already aggregated (``statistics.cell_stats``, ranked or not)."""
    out = pd.DataFrame({"checkpoint": cells["checkpoint"], "task": cells["task"], "protocol": cells["protocol_id"],
                        "params_id": cells["params_id"], "metric": cells["metric"], "value": cells["mean"],
                        "lo": cells["lo"], "hi": cells["hi"], "n": cells["n"].astype(int)}, columns=CSV_COLUMNS)
    out = out.sort_values(CSV_COLUMNS[:5], kind="stable")
    return out.to_csv(index=False, float_format="%.6f", lineterminator="\n", na_rep="")
