"""Records for the results tests, written directly (no Ray, no probe): valid schema-2 records and
their per-example predictions files, as the worker writes them (DESIGN.md §6)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

from evalbench.protocols.bootstrap import Predictions, bootstrap_intervals
from evalbench.results.predictions import predictions_path, save_predictions
from evalbench.results.record import Record
from evalbench.results.store import RecordStore


def record(checkpoint: str, metrics: dict, *, task: str = "digits", protocol: str = "knn", version: int = 1,
           params: Optional[dict] = None, seed: Optional[int] = None, status: str = "ok",
           created: str = "2026-01-01T00:00:00+00:00", ci95: Optional[dict] = None, details: Optional[dict] = None,
           meta: Optional[dict] = None, random_init: bool = False, error: Optional[str] = None) -> dict:
    """A valid record dict; its key is a digest of what makes it one evaluation (and `created`)."""
    params = params if params is not None else {"k": 20}
    key = hashlib.sha256(json.dumps([checkpoint, task, protocol, version, params, seed, created],
                                    sort_keys=True).encode()).hexdigest()[:32]
    d = dict(details or {})
    if ci95:
        d["ci95"] = ci95
    return {"schema": 2, "key": key,
            "checkpoint": {"name": checkpoint, "arch": "builtin:small-cnn", "sha256": None if random_init else "ab" * 32,
                           "random_init": random_init, "meta": meta or {}},
            "task": {"name": task, "version": 1}, "protocol": {"name": protocol, "version": version, "params": params,
                                                              "implementation": protocol, "stochastic": seed is not None,
                                                              "view": "identity"},
            "seed": seed, "status": status, "metrics": metrics if status == "ok" else {}, "details": d,
            "error": error if status != "ok" else None,
            "env": {"evalbench": "0.1.0", "git": "c0ffee", "torch": "2.14.1", "device": "cpu", "host": "h"},
            "timing_s": {"probe": 0.5}, "created": created}


def with_predictions(rec: dict, storage: Path, y_true: np.ndarray, y_pred: dict[str, np.ndarray]) -> dict:
    """Store per-example predictions for a record and set its interval details as the worker does
    (results/predictions.py::interval_details)."""
    preds = Predictions(np.asarray(y_true), {m: np.asarray(p) for m, p in y_pred.items()})
    path = save_predictions(predictions_path(storage, rec["key"]), preds)
    rec["metrics"] = {m: float((np.asarray(p) == np.asarray(y_true)).mean()) for m, p in y_pred.items()}
    rec["details"]["predictions"] = {"file": str(path.relative_to(storage)), "n": len(y_true), "metrics": sorted(y_pred)}
    rec["details"]["ci_bootstrap"] = {"metrics": sorted(y_pred)}
    rec["details"]["ci95"] = bootstrap_intervals(preds)
    return rec


def predicted(y_true: np.ndarray, n_wrong: int, *, offset: int = 0, classes: int = 10) -> np.ndarray:
    """y_true with examples offset .. offset + n_wrong - 1 (cyclically) predicted wrong."""
    y = np.array(y_true).copy()
    idx = (offset + np.arange(n_wrong)) % len(y)
    y[idx] = (y[idx] + 1) % classes
    return y


def write_store(root: Path, records: list[dict]) -> RecordStore:
    store = RecordStore(root)
    for r in records:
        store.write(Record.from_dict(r))
    return store
