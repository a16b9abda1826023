"""Frozen-feature probes (knn, linear), registered by name in PROBES."""
from evalbench.protocols.base import PARAMS, PROBES, Probe, ProbeParams, ProbeResult, TaskSizes
from evalbench.protocols import diagnostics as _diagnostics, knn as _knn, linear as _linear  # noqa: E402,F401  (register the probes)
from evalbench.protocols import fewshot as _fewshot, invariance as _invariance  # noqa: E402,F401  (protocol suite, issue 7)
from evalbench.protocols import finetune as _finetune  # noqa: E402,F401  (fine-tuning protocols: train stages)

__all__ = ["PARAMS", "PROBES", "Probe", "ProbeParams", "ProbeResult", "TaskSizes"]
