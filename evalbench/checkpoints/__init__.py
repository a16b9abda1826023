"""Checkpoint ingestion: safe reading (no code execution), layouts, strict mapping with a report,
``inspect``'s proposed rename rules and ``convert`` to a clean safetensors file (DESIGN.md §11)."""
from evalbench.checkpoints.layouts import LAYOUTS, Layout, detect_layout, unwrap
from evalbench.checkpoints.load import fit_raw, load_file, load_strict
from evalbench.checkpoints.mapping import HEAD_NAMES, Fit, LoadReport, Target
from evalbench.checkpoints.read import RawCheckpoint, read_checkpoint
from evalbench.checkpoints.rules import MAX_SKIPPED_FRACTION, LoadRules

__all__ = [
    "HEAD_NAMES", "LAYOUTS", "MAX_SKIPPED_FRACTION", "Fit", "Layout", "LoadReport", "LoadRules", "RawCheckpoint",
    "Target", "detect_layout", "fit_raw", "load_file", "load_strict", "read_checkpoint", "unwrap",
]
