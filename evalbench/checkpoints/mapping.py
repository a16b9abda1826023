"""Mapping a layout's candidate tensors onto an encoder's state dict, strictly, with every decision listed.

Given the selected candidate (``layouts.unwrap``) and the encoder's expected tensors (``Target``):

1. the suite's ``rename`` rules rewrite each name, in order;
2. a wrapper prefix is stripped (``module.``, ``backbone.``, ``encoder.``, ...): the one under
   which most names hit the encoder (ties: the shortest), so no list of wrapper names is needed;
3. a leading index of an ``nn.Sequential(*list(model.children())[:-1])`` wrapper (lightly, BYOL
   ports) becomes the name of the model's child at that index (``0.weight`` -> ``conv1.weight``);
4. every checkpoint tensor is then used (right name, right shape), or dropped for a stated reason
   (another candidate, a head under ``HEAD_NAMES``, the layout's method state, ``skip_unexpected``),
   or unexpected; every encoder tensor is filled, mis-shaped, skipped (``skip_missing``), or missing.

The load is ``ok`` only with nothing missing, mis-shaped or unexpected, and with the skipped tensors
holding at most ``MAX_SKIPPED_FRACTION`` of the encoder's parameter values. ``problems`` words
the failure: counts and the first few names of each list, and a hint that never proposes a skip
when (almost) nothing matched by name (the naming scheme differs: ``evalbench inspect``, rename rules).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from evalbench.checkpoints.layouts import Unwrapped
from evalbench.checkpoints.rules import MAX_SKIPPED_FRACTION, LoadRules, matches, rename
from evalbench.core.errors import CheckpointError

# name components of the parts of an SSL / supervised model that are not the encoder
HEAD_NAMES = frozenset({
    "fc", "head", "heads", "classifier", "projector", "projection", "projetion",  # sic: PyTorch-BYOL's attribute
    "projection_head", "prediction_head", "predictor", "prototypes", "momentum_projector",
    "projection_head_momentum", "mlp_head", "proj_head", "pred_head", "last_layer",
})
# BatchNorm's step counter does not change eval-mode features; old checkpoints lack it
COUNTERS = ("*num_batches_tracked",)
FEW = 8  # names listed per category in a message
NAMES_DIFFER = 0.5  # below this fraction of encoder tensors matched by name, the naming scheme differs


@dataclass(frozen=True)
class Target:
    """An encoder's expected tensors: name -> shape, whether floating, and its top-level child names."""

    shapes: dict[str, tuple[int, ...]]
    floating: dict[str, bool]
    children: tuple[str, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "Target":
        sd = model.state_dict()
        return cls({k: tuple(v.shape) for k, v in sd.items()}, {k: v.is_floating_point() for k, v in sd.items()},
                   tuple(n for n, _ in model.named_children()))

    def numel(self, names) -> int:
        return sum(_numel(self.shapes[n]) for n in names if self.floating[n])

    @property
    def values(self) -> int:
        """Parameter (and float buffer) values of the encoder, counters excluded."""
        return self.numel(self.shapes)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


HEAD_SUFFIXES = ("_head", "_predictor", "_projector", "_classifier")  # online_predictor (byol-pytorch), aux_head, ...


def head_part(name: str) -> Optional[str]:
    """The head component of a name (``module.encoder_q.fc.0.weight`` -> 'fc'), if any."""
    return next((c for c in name.split(".")[:-1] if c in HEAD_NAMES or c.endswith(HEAD_SUFFIXES)), None)


def _tensors(n: int) -> str:
    return f"{n} tensor{'s' if n != 1 else ''}"


def _listing(label: str, items: list[str]) -> str:
    more = f" (+{len(items) - FEW} more)" if len(items) > FEW else ""
    return f"{label} ({len(items)}): {', '.join(items[:FEW])}{more}"


@dataclass
class Fit:
    """How one candidate fills one encoder (see the module doc)."""

    unwrapped: Unwrapped
    target: Target
    arch: str
    rules: LoadRules
    source: str
    prefix: str = ""  # wrapper prefix stripped after the rename rules
    mapping: dict[str, str] = field(default_factory=dict)  # encoder name -> the file's name
    renamed: int = 0  # tensors whose name a rename rule changed
    mismatched: list[str] = field(default_factory=list)  # "name (file shape) vs (model shape)"
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # encoder tensors left at init by skip_missing
    defaulted: list[str] = field(default_factory=list)  # counters the file lacks
    unexpected: list[str] = field(default_factory=list)  # the file's names nothing uses
    dropped: dict[str, str] = field(default_factory=dict)  # the file's name -> why

    @property
    def encoder_tensors(self) -> int:
        return len(self.target.shapes) - len(self.defaulted)

    @property
    def skipped_fraction(self) -> float:
        return self.target.numel(self.skipped) / max(1, self.target.values)

    @property
    def names_differ(self) -> bool:
        return len(self.mapping) + len(self.mismatched) < NAMES_DIFFER * self.encoder_tensors

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected) and self.skipped_fraction <= MAX_SKIPPED_FRACTION

    def problems(self) -> Optional[str]:
        """The error message of a load that is not ``ok`` (None when it is)."""
        if self.ok:
            return None
        u = self.unwrapped
        where = (f"checkpoint {self.source} ({u.layout.name} layout, candidate {u.selected}"
                 + (f", prefix {u.prefix + self.prefix!r}" if u.prefix + self.prefix else "") + ")")
        parts = [f"{where} does not fit {self.arch}: {len(self.mapping)} of {self.encoder_tensors} encoder tensors filled"]
        parts += [_listing("missing", self.missing)] if self.missing else []
        parts += [_listing("shape mismatch (checkpoint vs model)", self.mismatched)] if self.mismatched else []
        parts += [_listing("unexpected", self.unexpected)] if self.unexpected else []
        if self.skipped_fraction > MAX_SKIPPED_FRACTION:
            parts.append(f"skip_missing leaves {_tensors(len(self.skipped))} at initialisation, "
                         f"{100 * self.skipped_fraction:.1f}% of the encoder's parameter values; a skip may leave at "
                         f"most {100 * MAX_SKIPPED_FRACTION:g}% (a few named tensors), never random weights under a "
                         "pretrained name")
        parts.append(self._hint())
        return "; ".join(parts)

    def _naming_hint(self) -> str:
        return (f"run `evalbench inspect {self.source} --arch {self.arch}` to see its names and a proposed mapping, "
                "then add `rename:` rules (or `rules:` with the file `inspect --write-rules` writes) to its suite entry")

    def _hint(self) -> str:
        if self.names_differ:
            return (f"the checkpoint's naming scheme differs from {self.arch}'s "
                    f"({len(self.mapping) + len(self.mismatched)} of {self.encoder_tensors} names match): "
                    + self._naming_hint())
        over = self.skipped_fraction > MAX_SKIPPED_FRACTION
        hints = ["check `arch:` and what `skip_missing:` matches"] if over else []
        if self.mismatched:
            hints.append("check `arch:` (and `preprocessing: in_chans`)")
        if self.missing:
            skippable = self.target.numel(self.missing + self.skipped) <= MAX_SKIPPED_FRACTION * self.target.values
            if skippable and not (self.mismatched or over):
                hints.append("if these tensors may stay at initialisation, list them under `skip_missing:` (at most "
                             f"{100 * MAX_SKIPPED_FRACTION:g}% of the parameter values)")
            else:
                hints.append(("" if hints else "check `arch:`, or ") + "map the names with `rename:` rules "
                             f"(`evalbench inspect {self.source} --arch {self.arch}` proposes them)")
        if self.unexpected:
            others = [c for c in self.unwrapped.candidates if c != self.unwrapped.selected]
            hints.append("list checkpoint tensors that are not part of the encoder under `skip_unexpected:`"
                         + (f" (or `select:` another candidate: {', '.join(others)})" if others else ""))
        return "; ".join(hints)


def _prefix_options(names: list[str]) -> set[str]:
    options = {""}
    for n in names:
        parts = n.split(".")
        options.update(".".join(parts[:i]) + "." for i in range(1, min(len(parts), 4)))
    return options


def fit_checkpoint(unwrapped: Unwrapped, target: Target, *, arch: str, rules: LoadRules = LoadRules(),
                   source: str = "checkpoint") -> Fit:
    fit = Fit(unwrapped, target, arch, rules, source)
    renamed: dict[str, str] = {}  # new name -> relative name
    for rel in unwrapped.tensors:
        new = rename(rel, rules.rename)
        if new in renamed:
            raise CheckpointError(f"{source}: rename rules map both {renamed[new]!r} and {rel!r} to {new!r}")
        renamed[new] = rel
        fit.renamed += new != rel

    def encoder_name(name: str, prefix: str) -> Optional[str]:
        if not name.startswith(prefix):
            return None
        name = name[len(prefix):]
        m = re.match(r"(\d+)\.(.*)", name)
        if m and name not in target.shapes and int(m.group(1)) < len(target.children):  # Sequential(*children) index
            name = f"{target.children[int(m.group(1))]}.{m.group(2)}"
        return name if name in target.shapes else None

    score = lambda p: sum(encoder_name(n, p) is not None for n in renamed)  # noqa: E731
    fit.prefix = max(sorted(_prefix_options(list(renamed)), key=lambda p: (len(p), p)), key=score)
    hit: set[str] = set()
    for new, rel in renamed.items():
        file_name, enc = unwrapped.sources[rel], encoder_name(new, fit.prefix)
        if enc is not None and enc not in hit:
            hit.add(enc)
            shape = tuple(unwrapped.tensors[rel].shape)
            if shape == target.shapes[enc]:
                fit.mapping[enc] = file_name
            else:
                fit.mismatched.append(f"{enc} {shape} vs {target.shapes[enc]}")
        else:
            _set_aside(fit, file_name, rel, new)
    for file_name in unwrapped.rest:
        _set_aside(fit, file_name, file_name)
    fit.dropped.update(unwrapped.dropped)
    for enc in target.shapes:
        if enc in hit:
            continue
        if matches(enc, COUNTERS):
            fit.defaulted.append(enc)
        elif matches(enc, rules.skip_missing):
            fit.skipped.append(enc)
        else:
            fit.missing.append(enc)
    return fit


def _set_aside(fit: Fit, file_name: str, *names: str) -> None:
    """A checkpoint tensor no encoder tensor takes: dropped (skip_unexpected, a head) or unexpected."""
    head = head_part(file_name)
    if any(matches(n, fit.rules.skip_unexpected) for n in (file_name, *names)):
        fit.dropped[file_name] = "skip_unexpected"
    elif head is not None:
        fit.dropped[file_name] = f"head ({head})"
    else:
        fit.unexpected.append(file_name)


@dataclass(frozen=True)
class LoadReport:
    """What a load did: kept in the features artifact's meta and so in every record (``details.features.load``)."""

    format: str
    unpickled: bool
    layout: str
    candidates: dict[str, int]
    selected: str
    selected_by: str
    prefix: str
    rules: dict
    renamed: int
    loaded: int
    encoder_tensors: int
    dropped: dict[str, str]
    skipped: tuple[str, ...]
    skipped_fraction: float
    defaulted: tuple[str, ...]
    mapping: dict[str, str]  # encoder name -> the file's name (convert's metadata; not in as_dict)

    def as_dict(self) -> dict:
        reasons: dict[str, int] = {}
        for why in self.dropped.values():
            key = why.split(" (")[0]  # "head (fc)" -> "head"; "candidate key (not selected)" -> "candidate key"
            reasons[key] = reasons.get(key, 0) + 1
        return {"format": self.format, "unpickled": self.unpickled, "layout": self.layout,
                "candidates": dict(self.candidates), "selected": self.selected, "selected_by": self.selected_by,
                "prefix": self.prefix, "rules": self.rules, "renamed": self.renamed, "loaded": self.loaded,
                "encoder_tensors": self.encoder_tensors, "dropped": reasons,
                "dropped_sample": sorted(self.dropped)[:FEW], "skipped": list(self.skipped),
                "skipped_fraction": round(self.skipped_fraction, 6), "defaulted": len(self.defaulted)}


def report_of(fit: Fit, *, format: str, unpickled: bool) -> LoadReport:
    u = fit.unwrapped
    return LoadReport(format=format, unpickled=unpickled, layout=u.layout.name, candidates=dict(u.candidates),
                      selected=u.selected, selected_by=u.selected_by, prefix=u.prefix + fit.prefix,
                      rules=fit.rules.payload(), renamed=fit.renamed, loaded=len(fit.mapping),
                      encoder_tensors=fit.encoder_tensors, dropped=dict(fit.dropped), skipped=tuple(fit.skipped),
                      skipped_fraction=fit.skipped_fraction, defaulted=tuple(fit.defaulted), mapping=dict(fit.mapping))
