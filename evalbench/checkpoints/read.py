"""Reading a checkpoint file without running code from it, into one flat name -> tensor mapping.

Safety: safetensors files hold tensors only; other files go through ``torch.load(weights_only=True)``,
which unpickles tensors and plain containers but refuses any other object (a pickled class or
function, the way a malicious file runs code). A refusal names the refused global and the option
that allows full unpickling of a file the user trusts (``--trust-pickle``, ``trust_pickle: true``);
a file loaded that way says so in its report (``unpickled: true``).

Flattening: nested mappings become dotted names (``{"teacher": {"backbone.conv1.weight": t}}`` ->
``teacher.backbone.conv1.weight``), so every layout (``layouts.py``) is a question of names.
Training state that holds tensors but no weights (optimizer moments, scaler) is set aside whole.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from evalbench.core.errors import CheckpointError, plain_message

# plain data holders real checkpoints pickle beside the weights (DINO, solo-learn save `args`)
SAFE_GLOBALS = [argparse.Namespace]
# top-level entries that hold training state (tensors too), never weights: set aside, listed in the report
TRAINING_STATE = ("optimizer", "optimizer_states", "optimizer_state_dict", "optim", "lr_scheduler", "lr_schedulers",
                  "scheduler", "scaler", "fp16_scaler", "amp", "callbacks", "loops")
TRUST_HINT = ("if you trust this file, allow full unpickling with `--trust-pickle` (evalbench inspect/convert/run) or "
              "`trust_pickle: true` in its suite entry; better, re-save the weights with "
              "torch.save(model.state_dict(), ...) or safetensors")
# torch's wordings of a weights_only refusal (2.4 .. 2.14): "Unsupported global: GLOBAL x.y was not an allowed
# global", "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
_REFUSED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


@dataclass(frozen=True)
class RawCheckpoint:
    """A checkpoint file's tensors under flat dotted names (in file order) and what else it holds."""

    tensors: dict[str, torch.Tensor]
    format: str  # "safetensors" | "torch"
    source: str = "checkpoint"  # the file, for messages
    other: tuple[str, ...] = ()  # top-level entries that are not weights (epoch, args, optimizer, ...)
    metadata: dict = field(default_factory=dict)  # safetensors header metadata (str -> str)
    unpickled: bool = False  # read with full unpickling (trust_pickle)

    @property
    def top_level(self) -> set[str]:
        """The first component of every tensor name (``teacher``, ``state_dict``, ``conv1``, ...)."""
        return {k.split(".", 1)[0] for k in self.tensors}


def _refusal(e: BaseException) -> str:
    refused = _REFUSED.search(str(e))
    if refused:
        return (f"it pickles a {refused.group(1)} object, which weights-only loading refuses (unpickling it could "
                f"run code); {TRUST_HINT}")
    first = plain_message((str(e).strip().splitlines() or [""])[0], limit=300)  # whole sentences only
    what = f"{type(e).__name__}: {first}" if first else f"{type(e).__name__}, no message from torch"
    return (f"{what}; the file may be truncated or corrupt, or hold pickled objects other than "
            "tensors: re-save the weights with torch.save(model.state_dict(), ...) or safetensors")


def _load_torch(path: Path, *, trust_pickle: bool) -> Any:
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    try:  # header: 8-byte little-endian length, then a JSON object
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < (100 << 20)


def read_checkpoint(path: Path, *, trust_pickle: bool = False) -> RawCheckpoint:
    """Read ``path`` safely (see the module doc); any unusable file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} " + ("is a directory, not a file" if path.is_dir() else "does not exist"))
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes): truncated, e.g. by an interrupted download "
                              "or copy; fetch it again, or re-save the weights")
    try:
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                return RawCheckpoint(tensors, "safetensors", str(path), metadata=dict(f.metadata() or {}))
        obj = _load_torch(path, trust_pickle=trust_pickle)
    except Exception as e:  # noqa: BLE001 - any reader failure means an unusable file
        raise CheckpointError(f"checkpoint {path} could not be read ({_refusal(e)})") from None
    try:
        tensors, other = flatten(obj)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors outside training state (entries: "
                              f"{', '.join(other) or 'none'}); is it a model checkpoint?")
    return RawCheckpoint(tensors, "torch", str(path), other=tuple(other), unpickled=trust_pickle)


def flatten(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(dotted name -> tensor for every tensor in nested mappings, top-level entries that are not weights)."""
    if isinstance(obj, torch.nn.Module):  # a whole pickled module (trust_pickle only)
        obj = obj.state_dict()
    if isinstance(obj, torch.Tensor):
        raise CheckpointError("the file holds a single tensor, not named weights")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"the file holds a {type(obj).__name__}, not a mapping of named weights")
    tensors: dict[str, torch.Tensor] = {}
    other: list[str] = []

    def walk(node: Mapping, prefix: str) -> bool:
        found = False
        for k, v in node.items():
            v = v.state_dict() if isinstance(v, torch.nn.Module) else v
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}{k}"] = v
                found = True
            elif isinstance(v, Mapping):
                found = walk(v, f"{prefix}{k}.") or found
        return found

    for k, v in obj.items():
        if str(k) in TRAINING_STATE or not walk({k: v}, ""):
            other.append(str(k))
    return tensors, other
