"""Per-example test predictions beside the record (DESIGN.md §6): one small array file per probe
record, addressed by the record's key, under ``STORAGE/artifacts/predictions/<key>.npz``.

The file holds ``y_true`` (N,) and ``pred__<metric>`` (N,) int64 for every accuracy metric, in
the order of the probe's test examples: the same order for every checkpoint on the same task and
view, so two checkpoints' files pair example by example (``bootstrap.paired_bootstrap``). Written
atomically (``core.atomic``); read with ``allow_pickle=False``.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np

from evalbench.core.atomic import write_bytes
from evalbench.protocols.base import ProbeResult
from evalbench.protocols.bootstrap import LEVEL, RESAMPLES, SEED, Predictions, bootstrap_intervals

PREFIX = "pred__"


def predictions_path(storage: Path, key: str) -> Path:
    return Path(storage) / "artifacts" / "predictions" / f"{key}.npz"


def save_predictions(path: Path, predictions: Predictions) -> Path:
    arrays = {"y_true": np.asarray(predictions.y_true, dtype=np.int64),
              **{PREFIX + m: np.asarray(p, dtype=np.int64) for m, p in predictions.y_pred.items()}}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def load_predictions(path: Path) -> Optional[Predictions]:
    """The stored predictions, or None where the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return Predictions(z["y_true"], {k[len(PREFIX):]: z[k] for k in z.files if k.startswith(PREFIX)})


def interval_details(result: ProbeResult, *, storage: Path, key: str) -> dict:
    """What a probe record gets beside its metrics (DESIGN.md §6): ``ci95`` (metric -> [lower, upper]:
    the probe's own interval where it made one, else the percentile bootstrap of its per-example
    test predictions), how they were made, and where the predictions file is (written here)."""
    out: dict = {}
    ci = dict(result.intervals)
    if result.predictions is not None:
        path = save_predictions(predictions_path(storage, key), result.predictions)
        boot = bootstrap_intervals(result.predictions)
        ci = {**boot, **ci}
        out["predictions"] = {"file": str(path.relative_to(storage)), "n": int(len(result.predictions.y_true)),
                              "metrics": sorted(result.predictions.y_pred)}
        out["ci_bootstrap"] = {"level": LEVEL, "resamples": RESAMPLES, "seed": SEED, "metrics": sorted(boot)}
    if ci:
        out["ci95"] = {m: ci[m] for m in result.metrics if m in ci}
    return out
