"""Probes: registered pure functions ``(features, *, params, seed, device) -> ProbeResult``.

A protocol is data (protocols/NAME.yaml: which implementation, with which params, which
version, whether it is stochastic) plus one of these functions (DESIGN.md §3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from evalbench.core.registry import Registry
from evalbench.core.validate import Doc
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


@dataclass(frozen=True)
class TaskSizes:
    """How many images a task's splits hold (from its split file, known before any data is read)."""

    task: str
    bank: int  # train + val: what a probe without a selection step (k-NN) fits on
    test: Optional[int]  # None: the dataset has a test set of its own (its size is known once loaded)
    # images per class of each split after the split file ({"train": (n_0, .., n_C-1), "val": .., "test": ..}),
    # read from the labels (no image decoded) on the first call; None where the data cannot be read
    # (planning records why). A callable: only a protocol whose check needs counts (few-shot) pays for them
    class_counts: Callable[[], Optional[dict[str, tuple[int, ...]]]] = lambda: None


class ProbeParams(Doc):
    """A probe's params, typed with their ranges (core.validate), registered in PARAMS under the
    probe's implementation name. The protocol YAML's params and a suite's overrides are validated
    with it at the edge, before any work; ``check_sizes`` checks what needs the task's sizes."""

    def check_sizes(self, sizes: TaskSizes) -> list[tuple[tuple, str]]:
        """(path inside params, message) for every value the task is too small for."""
        return []


PARAMS: Registry[type[ProbeParams]] = Registry("probe params model", "evalbench list protocols")
