"""The one identity function (DESIGN.md §2, §7.5): every stage, artifact and record key is
``identity(kind, payload, version=...)``, a hash of everything that fixes its output.

A payload holds plain values only (str, int, float, bool, None, lists, tuples, mappings with
str keys). Paths never enter a payload: the same data or weights at another path on another
machine keep their identity; what identifies them is their content (hashes, fingerprints).
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

IDENTITY_CHARS = 32  # hex digits kept (128 bits)


def canonical(value: Any) -> Any:
    """A JSON-ready copy with mapping keys sorted; fails on anything that is not a plain value."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"identity payloads hold finite numbers only, got {value!r}")
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"identity payload mapping keys must be str: {list(value)!r}")
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    raise TypeError(f"identity payloads hold plain values only, got {type(value).__name__}: {value!r}")


def identity(kind: str, payload: Mapping[str, Any], *, version: int) -> str:
    """Hash of (kind, the kind's code version, payload): equal iff the stage's output is the same."""
    doc = {"kind": kind, "version": int(version), "payload": canonical(payload)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:IDENTITY_CHARS]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
