"""Checkpoints: what a suite lists, and safe, strict loading into an encoder.

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)`` or safetensors)
and never degrades silently: after unwrapping the usual containers (``state_dict``, ``model``,
...) and stripping the wrapper prefix (``module.``, ``backbone.``, ``encoder.``,
``module.encoder_q.``, ...), every encoder tensor must be filled with the right shape, or
the load fails listing what is missing, mismatched and unexpected. Keys outside the encoder
(projection heads, classifiers, momentum encoders) are ignored and reported.
"""
from __future__ import annotations

import argparse
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from evalbench.core.errors import CheckpointError

# containers real projects nest their weights in, looked into in this order
_CONTAINERS = ("state_dict", "model", "model_state", "module", "teacher", "student", "network", "net", "encoder")
# BatchNorm's step counter does not change features; old checkpoints lack it
_ALWAYS_SKIPPABLE = ("*num_batches_tracked",)
# wrapper names of momentum/target copies, never chosen over the online encoder on a tie
_MOMENTUM = ("encoder_k.", "momentum", "target")
# plain data holders real checkpoints pickle beside the weights (DINO, solo-learn save `args`)
_SAFE_GLOBALS = [argparse.Namespace]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors safely: safetensors, or torch.load with weights_only=True."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        reason = (f"it pickles a {refused.group(1)} object, which weights_only loading refuses" if refused
                  else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}")
        raise CheckpointError(
            f"checkpoint {path} could not be read ({reason}); the file may be truncated or corrupt, or hold "
            "pickled objects other than tensors: re-save the weights with torch.save(model.state_dict(), ...) "
            "or safetensors"
        ) from None
    return unwrap_state_dict(obj, where=str(path))


def unwrap_state_dict(obj: Any, *, where: str) -> dict[str, torch.Tensor]:
    """Descend through the usual containers until a flat name -> tensor mapping."""
    for _ in range(4):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):  # mixed dict: keep its tensors (e.g. {'epoch': 3, 'conv.weight': ...})
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(f"checkpoint {where} holds no tensors under {_CONTAINERS}; is it a model checkpoint?")


def best_prefix(keys: list[str], target: set[str]) -> str:
    """The wrapper prefix (e.g. 'module.encoder_q.') under which most keys match the encoder."""
    candidates = {""}
    for k in keys:
        parts = k.split(".")
        candidates.update(".".join(parts[:i]) + "." for i in range(1, min(len(parts), 4)))
    score = lambda p: sum(k.startswith(p) and k[len(p):] in target for k in keys)  # noqa: E731
    # ties: the shortest prefix, then not a momentum/target copy (MoCo encoder_k, BYOL target_network)
    return max(sorted(candidates, key=lambda p: (len(p), any(m in p for m in _MOMENTUM), p)), key=score)


@dataclass(frozen=True)
class LoadReport:
    prefix: str
    loaded: int
    ignored: tuple[str, ...]  # checkpoint keys outside the encoder (heads, momentum copies)
    skipped: tuple[str, ...]  # encoder keys left at init because the user allowed it

    def as_dict(self) -> dict:
        return {"prefix": self.prefix, "loaded": self.loaded, "ignored": len(self.ignored),
                "ignored_sample": list(self.ignored[:8]), "skipped": list(self.skipped)}


def _listing(label: str, keys: list[str]) -> str:
    more = f" (+{len(keys) - 10} more)" if len(keys) > 10 else ""
    return f"{label} ({len(keys)}): {', '.join(keys[:10])}{more}"


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], *, arch: str, skip_missing: tuple[str, ...] = ()) -> LoadReport:
    target = model.state_dict()
    prefix = best_prefix(list(sd), set(target))
    stripped = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    unexpected = sorted(k for k in sd if not (k.startswith(prefix) and k[len(prefix):] in target))
    patterns = _ALWAYS_SKIPPABLE + tuple(skip_missing)
    missing = sorted(k for k in target if k not in stripped)
    skipped = [k for k in missing if any(fnmatch.fnmatch(k, p) for p in patterns)]
    missing = [k for k in missing if k not in skipped]
    mismatched = [f"{k} {tuple(stripped[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
                  if k in stripped and stripped[k].shape != v.shape]
    if missing or mismatched:
        parts = [f"checkpoint does not fit {arch}"]
        parts += [_listing("missing", missing)] if missing else []
        parts += [_listing("shape mismatch (checkpoint vs model)", mismatched)] if mismatched else []
        parts += [_listing("unexpected", unexpected)] if unexpected else []
        parts.append("check `arch:` (and `in_chans`), or list keys that may stay unfilled under `skip_missing:`")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict({k: v for k, v in stripped.items() if k in target}, strict=False)
    return LoadReport(prefix, len(target) - len(skipped), tuple(unexpected), tuple(skipped))
