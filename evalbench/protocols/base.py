"""Probes: registered pure functions ``(features, *, params, seed, device) -> ProbeResult``.

A protocol is data (protocols/NAME.yaml: which implementation, with which params, which
version, whether it is stochastic) plus one of these functions (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from evalbench.core.registry import Registry


@dataclass(frozen=True)
class ProbeResult:
    metrics: dict[str, float]  # the reported numbers, e.g. {"top1": 0.962}
    details: dict = field(default_factory=dict)  # chosen hyperparameters, curves


Probe = Callable[..., ProbeResult]
PROBES: Registry[Probe] = Registry("probe implementation", "evalbench list protocols")
