"""Errors raised at the boundaries. Each message says what went wrong and how to fix it."""
from __future__ import annotations

import re


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


class PreflightError(EvalbenchError):
    """Something the whole run needs is not usable (results directory, artifact store, Ray cluster):
    found before any work starts."""


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")  # terminal colour / cursor codes
MESSAGE_CHARS = 2000  # a stored error message longer than this is shortened at a sentence end


def plain_message(text: object, *, limit: int = MESSAGE_CHARS) -> str:
    """One plain line for a record or a summary: no terminal codes, no line breaks, and never cut
    mid-sentence (a message over ``limit`` characters keeps its whole sentences and says how much
    was left out)."""
    words = ANSI.sub("", str(text)).replace("\x00", "").split()
    line = " ".join(words)
    if len(line) <= limit:
        return line
    head = line[:limit]
    cut = max(head.rfind(". "), head.rfind("; "), head.rfind("? "), head.rfind("! "))
    kept = head[: cut + 1] if cut > limit // 2 else head[: head.rfind(" ")].rstrip(",;:") + " ..."
    return f"{kept} [{len(line) - len(kept)} more characters not shown]"
