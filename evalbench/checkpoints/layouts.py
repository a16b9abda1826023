"""Checkpoint layouts: where in a file the encoder's weights are, registered as detector + mapping.

A layout is data: a detector over the file's flat tensor names (``read.py``), its candidate
encoders (name, the prefix its tensors sit under; the first is the documented default), and the
tensors outside every candidate it drops by name (negative queues, loss state). Detection tries
the layouts in ``priority`` order and takes the first that fits; ``plain`` fits every file.

What a layout leaves to the mapping (``mapping.py``), the same for every layout: wrapper
prefixes under the candidate (``module.``, ``backbone.``, ``encoder.``, ...), an
``nn.Sequential(*children)`` wrapper's indices, heads (``HEAD_NAMES``), rename rules and skips.

==============  =====================================================  ========================
layout          what it is                                             candidates (default first)
==============  =====================================================  ========================
vissl           VISSL ``classy_state_dict`` / ``trunk._feature_blocks``  trunk
dino            DINO / iBOT / MSN ``{teacher, student}``                teacher, student
moco            MoCo v1/v2 ``encoder_q/_k``, v3 ``base/momentum_encoder``  query, key
byol            BYOL ports ``online_network/target_network``            online, target
lightly         lightly ``backbone`` + ``projection_head``             online, momentum
solo-learn      solo-learn ``backbone`` + ``projector/classifier``     online, momentum
lightning       PyTorch Lightning ``.ckpt`` (``state_dict``)             model
nested          ``state_dict`` / ``model`` / ... (timm: + ``state_dict_ema``)  model, ema
plain           a state dict (timm, torchvision, safetensors, ...)     model
==============  =====================================================  ========================
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from evalbench.checkpoints.read import RawCheckpoint
from evalbench.core.errors import CheckpointError
from evalbench.core.registry import Registry


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    detect: Callable[[RawCheckpoint], bool]
    candidates: tuple[tuple[str, str], ...]  # (name, regex of the prefix its tensors sit under); first = default
    drop: tuple[tuple[str, str], ...] = ()  # (regex searched in a name, reason) for tensors outside the candidates
    priority: int = 50

    @property
    def default(self) -> str:
        return self.candidates[0][0]


LAYOUTS: Registry[Layout] = Registry("checkpoint layout", "DESIGN.md §11, evalbench inspect")


def register(layout: Layout) -> Layout:
    return LAYOUTS.register(layout.name)(layout)


def _under(*markers: str) -> str:
    """Regex of a prefix that ends with the first name component among ``markers``: 'a.b.encoder_q.'."""
    return rf"^(?:[^.]+\.)*?(?:{'|'.join(markers)})\."


def _has(*regexes: str) -> Callable[[RawCheckpoint], bool]:
    """Every regex matches (re.search) at least one tensor name."""
    compiled = [re.compile(r) for r in regexes]
    return lambda raw: all(any(c.search(k) for k in raw.tensors) for c in compiled)


_STATE = r"(?:state_dict\.)?"  # Lightning nests the module's names under state_dict
CONTAINERS = ("state_dict", "model", "model_state", "model_state_dict", "network", "net")
EMA_CONTAINERS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict")

register(Layout("vissl", "VISSL: classy_state_dict.base_model.model.{trunk,heads}, trunk._feature_blocks.*",
                _has(r"(^|\.)_feature_blocks\."), (("trunk", _under("_feature_blocks")),),
                drop=((r"(^|\.)loss\.", "loss state"),), priority=10))
register(Layout("dino", "teacher/student (DINO, iBOT, MSN): {teacher: ..., student: ...}",
                lambda raw: {"teacher", "student"} <= raw.top_level,
                (("teacher", r"^teacher\."), ("student", r"^student\.")),
                drop=((r"^dino_loss\.", "loss state (DINO center)"),), priority=20))
register(Layout("moco", "MoCo v1/v2 (encoder_q / encoder_k, queue) and v3 (base_encoder / momentum_encoder)",
                _has(r"(^|\.)(encoder_q|base_encoder)\."),
                (("query", _under("encoder_q", "base_encoder")), ("key", _under("encoder_k", "momentum_encoder"))),
                drop=((r"(^|\.)queue(_ptr)?$", "negative queue"),), priority=30))
register(Layout("byol", "BYOL ports: online_network / target_network (nested or prefixed)",
                _has(r"(^|\.)(online_network|online_network_state_dict|online_encoder)\."),
                (("online", _under("online_network", "online_network_state_dict", "online_encoder")),
                 ("target", _under("target_network", "target_network_state_dict", "target_encoder"))), priority=40))
register(Layout("lightly", "lightly models: backbone + projection_head / prediction_head (+ backbone_momentum)",
                _has(rf"^{_STATE}backbone\.", rf"^{_STATE}(projection_head|prediction_head|backbone_momentum)\."),
                (("online", rf"^{_STATE}backbone\."), ("momentum", rf"^{_STATE}backbone_momentum\.")), priority=50))
register(Layout("solo-learn", "solo-learn (Lightning): backbone + projector / classifier (+ momentum_backbone)",
                _has(rf"^{_STATE}backbone\.", rf"^{_STATE}(projector|classifier|momentum_backbone)\."),
                (("online", rf"^{_STATE}backbone\."), ("momentum", rf"^{_STATE}momentum_backbone\.")), priority=60))
register(Layout("lightning", "PyTorch Lightning .ckpt: the LightningModule's names under state_dict",
                lambda raw: "pytorch-lightning_version" in raw.other, (("model", r"^state_dict\."),), priority=70))
register(Layout("nested", f"weights nested under one of {', '.join(CONTAINERS)} (timm: + {EMA_CONTAINERS[0]})",
                lambda raw: bool(raw.top_level & set(CONTAINERS)) and raw.top_level <= set(CONTAINERS + EMA_CONTAINERS),
                (("model", rf"^(?:{'|'.join(CONTAINERS)})\."), ("ema", rf"^(?:{'|'.join(EMA_CONTAINERS)})\.")),
                priority=80))
register(Layout("plain", "a flat state dict (timm, torchvision, safetensors, an evalbench checkpoint, ...)",
                lambda raw: True, (("model", r"^"),), priority=1000))


def detect_layout(raw: RawCheckpoint) -> Layout:
    return next(lay for lay in sorted((LAYOUTS.get(n) for n in LAYOUTS), key=lambda lay: lay.priority)
                if lay.detect(raw))


@dataclass(frozen=True)
class Unwrapped:
    """The selected candidate's tensors under names relative to its prefix, and what the layout set aside."""

    layout: Layout
    selected: str
    selected_by: str  # "default" | "select"
    tensors: dict[str, torch.Tensor]  # relative name -> tensor, in file order
    sources: dict[str, str]  # relative name -> the file's name
    prefix: str  # the selected candidate's prefix in the file (the most common one)
    candidates: dict[str, int]  # candidate present in the file -> its tensor count
    values: dict[str, int]  # candidate present in the file -> its number of values (parameter count)
    dropped: dict[str, str]  # file name -> why (another candidate, negative queue, ...)
    rest: dict[str, torch.Tensor]  # outside every candidate, not dropped: the mapping decides (head or unexpected)


def _candidate_of(name: str, patterns: list[tuple[str, re.Pattern]]) -> Optional[tuple[str, str]]:
    for cand, pattern in patterns:
        m = pattern.match(name)
        if m:
            return cand, m.group(0)
    return None


def unwrap(raw: RawCheckpoint, *, select: Optional[str] = None, where: str = "checkpoint") -> Unwrapped:
    """Detect the layout and take the selected (or default) candidate's tensors out of ``raw``."""
    layout = detect_layout(raw)
    patterns = [(c, re.compile(p)) for c, p in layout.candidates]
    drops = [(re.compile(p), why) for p, why in layout.drop]
    by_candidate: dict[str, dict[str, tuple[str, str]]] = {c: {} for c, _ in layout.candidates}  # rel -> (file, prefix)
    rest: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    for name, tensor in raw.tensors.items():
        hit = _candidate_of(name, patterns)
        why = next((w for p, w in drops if p.search(name)), None)
        if hit is not None and why is None:
            rel = name[len(hit[1]):]
            if rel in by_candidate[hit[0]]:
                raise CheckpointError(f"{where}: {by_candidate[hit[0]][rel][0]!r} and {name!r} are the same tensor "
                                      f"{rel!r} of candidate {hit[0]}; re-save one of them")
            by_candidate[hit[0]][rel] = (name, hit[1])
        elif why is not None:
            dropped[name] = why
        else:
            rest[name] = tensor
    present = {c: len(t) for c, t in by_candidate.items() if t}
    chosen = select or layout.default
    if chosen not in present:
        known = ", ".join(f"{c} ({n} tensors)" for c, n in present.items()) or "none"
        asked = f"`select: {select}`" if select else f"its default candidate {chosen!r}"
        raise CheckpointError(f"{where}: {asked} is not in this {layout.name} checkpoint; its candidate encoders: {known}")
    for cand, entries in by_candidate.items():
        if cand != chosen:
            dropped.update({file: f"candidate {cand} (not selected)" for file, _ in entries.values()})
    entries = by_candidate[chosen]
    prefixes = [p for _, p in entries.values()]
    return Unwrapped(layout=layout, selected=chosen, selected_by="select" if select else "default",
                     tensors={rel: raw.tensors[file] for rel, (file, _) in entries.items()},
                     sources={rel: file for rel, (file, _) in entries.items()},
                     prefix=max(set(prefixes), key=prefixes.count), candidates=present,
                     values={c: sum(raw.tensors[f].numel() for f, _ in by_candidate[c].values()) for c in present},
                     dropped=dropped, rest=rest)
