"""Typed, validated specs: checkpoints, tasks, protocols, suites (parsed once, at the edge)."""
