"""A checkpoint's loading rules, as its suite entry (or a rules file) gives them.

- ``select``: which candidate encoder of a file that holds several (DINO teacher/student, MoCo
  query/key, BYOL online/target); None takes the layout's documented default.
- ``rename``: (regex, replacement) pairs applied in order to every name of the selected
  candidate, each to the result of the previous one (``re.sub``, Python replacement syntax:
  ``\\1``, ``\\g<name>``), for layouts no built-in rule knows.
- ``skip_missing``: glob patterns of encoder tensors allowed to stay at initialisation (a few
  named tensors: see ``MAX_SKIPPED_FRACTION``).
- ``skip_unexpected``: glob patterns of checkpoint tensors that are not part of the encoder and
  are dropped on purpose (heads evalbench does not know by name).

All of them change what is loaded, so all of them enter the weights' identity (``payload``).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Optional

from evalbench.core.errors import ConfigError

# a skip may leave at most this fraction of the encoder's parameter values at initialisation
MAX_SKIPPED_FRACTION = 0.01


@dataclass(frozen=True)
class LoadRules:
    select: Optional[str] = None
    rename: tuple[tuple[str, str], ...] = ()
    skip_missing: tuple[str, ...] = ()
    skip_unexpected: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for pattern, repl in self.rename:
            check_rule(pattern, repl, where="rename")

    def payload(self) -> dict:
        """What enters the identity and the record (plain values)."""
        return {"select": self.select, "rename": [list(r) for r in self.rename],
                "skip_missing": list(self.skip_missing), "skip_unexpected": list(self.skip_unexpected)}

    def merged(self, other: "LoadRules") -> "LoadRules":
        """These rules, then ``other``'s (a rules file, then the suite entry's own keys)."""
        return LoadRules(select=other.select or self.select, rename=self.rename + other.rename,
                         skip_missing=self.skip_missing + other.skip_missing,
                         skip_unexpected=self.skip_unexpected + other.skip_unexpected)


def check_rule(pattern: str, repl: str, *, where: str) -> None:
    try:
        compiled = re.compile(pattern)
        compiled.sub(repl, "")  # a bad group reference in the replacement fails here, not mid-load
    except (re.error, IndexError) as e:  # IndexError: an unknown group name in the replacement
        raise ConfigError(f"{where}: rule {pattern!r} -> {repl!r} is not a valid regex/replacement ({e})") from None


def rename(name: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
