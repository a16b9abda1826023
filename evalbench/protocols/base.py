"""Probes: registered pure functions ``(features, *, params, seed, device) -> ProbeResult``.

A protocol is data (protocols/NAME.yaml: which implementation, with which params, which
version, whether it is stochastic) plus one of these functions (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from evalbench.core.registry import Registry
from evalbench.protocols.bootstrap import Predictions


@dataclass(frozen=True)
class ProbeResult:
    metrics: dict[str, float]  # the reported numbers, e.g. {"top1": 0.962}
    details: dict = field(default_factory=dict)  # chosen hyperparameters, curves
    # per-example test predictions of the accuracy metrics: the worker stores them beside the record
    # and bootstraps each metric's 95% interval from them (protocols/bootstrap.py)
    predictions: Optional[Predictions] = None
    # metric -> [lower, upper] a probe computes itself (few-shot: over episodes); wins over the bootstrap
    intervals: dict[str, list[float]] = field(default_factory=dict)


Probe = Callable[..., ProbeResult]
PROBES: Registry[Probe] = Registry("probe implementation", "evalbench list protocols")
