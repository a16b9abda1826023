"""Where the built-in YAML files live (the repository root, beside the package)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
TASKS_DIR = Path(os.environ.get("EVALBENCH_TASKS_DIR", REPO_DIR / "tasks"))
PROTOCOLS_DIR = Path(os.environ.get("EVALBENCH_PROTOCOLS_DIR", REPO_DIR / "protocols"))
