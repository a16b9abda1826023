"""What runs on a worker: one feature extraction per (checkpoint, task), one probe per job.

Both are plain functions returning outcomes (never raising for bad input), so the local and
the Ray executor share them and a failing job never stops the others.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from evalbench.checkpoints import CheckpointSpec
from evalbench.errors import EvalbenchError
from evalbench.features import Features, get_features
from evalbench.protocols import ProtocolSpec, run_probe
from evalbench.tasks import TaskSpec


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def worker_info(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": device.type, "device_name": name}


def describe_error(e: BaseException) -> str:
    if isinstance(e, EvalbenchError):
        return f"{type(e).__name__}: {e}"
    tb = traceback.format_exception(type(e), e, e.__traceback__, limit=-3)
    return f"{type(e).__name__}: {e} (unexpected; last frames: {''.join(tb).strip()[-600:]})"


@dataclass(frozen=True)
class FeaturesOutcome:
    features: Optional[Features]
    error: Optional[str]
    seconds: float
    worker: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobOutcome:
    status: str  # "ok" | "error"
    metrics: dict
    details: dict
    error: Optional[str]
    timing: dict
    worker: dict


def extract_features(ckpt: CheckpointSpec, task: TaskSpec, *, ckpt_id: str, cache_dir: Optional[str]) -> FeaturesOutcome:
    device = pick_device()
    t0 = time.perf_counter()
    try:
        feats = get_features(ckpt, task, cache_dir=Path(cache_dir) if cache_dir else None, device=device, ckpt_id=ckpt_id)
        return FeaturesOutcome(feats, None, time.perf_counter() - t0, worker_info(device))
    except Exception as e:  # noqa: BLE001 - recorded in every job of the group
        return FeaturesOutcome(None, f"feature extraction failed: {describe_error(e)}", time.perf_counter() - t0, worker_info(device))


def probe_job(outcome: FeaturesOutcome, protocol: ProtocolSpec, *, seed: int) -> JobOutcome:
    device = pick_device()
    info = worker_info(device)
    timing = {"features": round(outcome.seconds, 3)}
    if outcome.features is None:
        return JobOutcome("error", {}, {}, outcome.error, timing, info)
    t0 = time.perf_counter()
    try:
        result = run_probe(protocol, outcome.features, seed=seed, device=device)
    except Exception as e:  # noqa: BLE001
        return JobOutcome("error", {}, {}, f"probe failed: {describe_error(e)}", timing, info)
    timing["probe"] = round(time.perf_counter() - t0, 3)
    details = {**result.details, "features": outcome.features.meta, "feature_dim": outcome.features.dim}
    return JobOutcome("ok", result.metrics, details, None, timing, info)
