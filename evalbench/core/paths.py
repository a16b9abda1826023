"""Where evalbench's own files are: the package, its source checkout (if any), the built-in YAML.

The built-in tasks and protocols live at the top of the repository (``tasks/*.yaml``,
``tasks/splits/*.json``, ``protocols/*.yaml``); a wheel also carries them inside the package, as
``evalbench/_builtin/tasks`` and ``evalbench/_builtin/protocols`` (pyproject.toml maps them).
``TASKS_DIR`` / ``PROTOCOLS_DIR`` are, first match wins:

1. ``$EVALBENCH_TASKS_DIR`` / ``$EVALBENCH_PROTOCOLS_DIR``;
2. running from evalbench's own source checkout (a clone used in place, or an editable install,
   which imports from the clone): ``<checkout>/tasks``, ``<checkout>/protocols``, the files you edit;
3. an installed package (``pip install .``, a wheel): ``<site-packages>/evalbench/_builtin/...``.

The directories are found on the file system, not through ``importlib.resources``: setuptools'
editable finder cannot import the data-only namespace packages ``evalbench._builtin.*``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../evalbench
BUILTIN_DIR = PACKAGE_DIR / "_builtin"  # exists in an installed wheel only


def _project_name(pyproject: Path) -> Optional[str]:
    """``[project] name`` of a pyproject.toml, or None when unreadable."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # Python 3.10: the one line we need
        section = re.search(r"(?ms)^\[project\]\s*$(.*?)(?=^\[|\Z)", text)
        name = section and re.search(r"""(?m)^name\s*=\s*["']([^"']+)["']""", section.group(1))
        return name.group(1) if name else None
    try:
        name = tomllib.loads(text).get("project", {}).get("name")
    except (tomllib.TOMLDecodeError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def source_checkout(package_dir: Path = PACKAGE_DIR) -> Optional[Path]:
    """The source checkout the package runs from: the directory holding the package when it also
    holds evalbench's pyproject.toml, else None (an installed package)."""
    root = package_dir.parent
    return root if _project_name(root / "pyproject.toml") == "evalbench" else None


REPO_DIR: Optional[Path] = source_checkout()


def _builtin_dir(env: str, name: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env])
    candidates = ([REPO_DIR / name] if REPO_DIR is not None else []) + [BUILTIN_DIR / name]
    return next((c for c in candidates if c.is_dir()), candidates[0])


TASKS_DIR = _builtin_dir("EVALBENCH_TASKS_DIR", "tasks")
PROTOCOLS_DIR = _builtin_dir("EVALBENCH_PROTOCOLS_DIR", "protocols")
