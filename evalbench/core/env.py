"""Which code produced a record: evalbench's version and, from its own git checkout only, the commit.

The git revision is read only when the package runs from evalbench's own source checkout (the
directory holding the package also holds evalbench's pyproject.toml, see ``paths.REPO_DIR``) and
that checkout is in a git work tree. An installed package has none: a git repository that merely
encloses site-packages (a venv inside some other project) says nothing about evalbench's code.
"""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Optional

import evalbench
from evalbench.core import paths

# variables that would point git at some other repository than the one holding the checkout
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX")


def _git(root: Path, *args: str) -> Optional[str]:
    """stdout of ``git -C root ARGS``, or None when git is absent or fails."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not write the index of the checkout
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=10, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def git_revision() -> Optional[str]:
    """``<12-digit sha>`` or ``<sha>-dirty`` (tracked files under the checkout modified) when
    evalbench runs from its own git checkout; None otherwise (installed package, no git, no commit)."""
    root = paths.REPO_DIR
    if root is None or _git(root, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    sha = _git(root, "rev-parse", "--short=12", "HEAD")
    if not sha:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return f"{sha}-dirty" if status else sha


def code_version() -> dict:
    """For records: ``{"evalbench": version, "git": git_revision()}`` (a new dict; git is read once)."""
    return {"evalbench": evalbench.__version__, "git": git_revision()}
