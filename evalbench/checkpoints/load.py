"""Loading a checkpoint file into an encoder: read safely, unwrap its layout, map strictly, report.

Never degrades silently (DESIGN.md §7.3): the load fails listing what is missing, mis-shaped and
unexpected unless every encoder tensor is filled (or skipped within ``MAX_SKIPPED_FRACTION``)
and every checkpoint tensor is used or dropped for a stated reason; the report says which layout,
candidate, prefix and rules were used and what was dropped.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from evalbench.checkpoints.layouts import unwrap
from evalbench.checkpoints.mapping import Fit, LoadReport, Target, fit_checkpoint, report_of
from evalbench.checkpoints.read import RawCheckpoint, read_checkpoint
from evalbench.checkpoints.rules import LoadRules
from evalbench.core.errors import CheckpointError


def fit_raw(model: nn.Module, raw: RawCheckpoint, *, arch: str, rules: LoadRules = LoadRules()) -> Fit:
    """How ``raw`` would fill ``model`` under ``rules`` (nothing loaded; ``inspect`` shows it)."""
    u = unwrap(raw, select=rules.select, where=f"checkpoint {raw.source}")
    return fit_checkpoint(u, Target.of(model), arch=arch, rules=rules, source=raw.source)


def load_strict(model: nn.Module, raw: RawCheckpoint, *, arch: str, rules: LoadRules = LoadRules()) -> LoadReport:
    """Fill ``model`` from ``raw`` or raise a CheckpointError that lists why not (module doc)."""
    fit = fit_raw(model, raw, arch=arch, rules=rules)
    problems = fit.problems()
    if problems:
        raise CheckpointError(problems)
    result = model.load_state_dict({enc: raw.tensors[name] for enc, name in fit.mapping.items()}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # the fit only maps names the model has
    return report_of(fit, format=raw.format, unpickled=raw.unpickled)


def load_file(model: nn.Module, path: Path, *, arch: str, rules: LoadRules = LoadRules(),
              trust_pickle: bool = False) -> LoadReport:
    return load_strict(model, read_checkpoint(path, trust_pickle=trust_pickle), arch=arch, rules=rules)
