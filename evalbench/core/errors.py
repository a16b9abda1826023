"""Errors raised at the boundaries. Each message says what went wrong and how to fix it."""


class EvalbenchError(Exception):
    """Base class: a user-facing error that fails one job (or the whole run, before it starts)."""


class ConfigError(EvalbenchError):
    """A suite, task or protocol YAML is malformed or names something unknown."""


class DatasetMissingError(EvalbenchError):
    """A task's data is not on this machine."""


class DatasetCorruptError(EvalbenchError):
    """A dataset file is there but truncated, malformed, or holds something it must not."""


class CheckpointError(EvalbenchError):
    """A checkpoint is missing, unreadable, or does not fit its declared architecture."""
