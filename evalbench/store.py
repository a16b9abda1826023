"""The results store: one JSON record per job under DIR/records/, written atomically (DESIGN.md §6)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

import torch

import evalbench
from evalbench.paths import REPO_DIR
from evalbench.suite import Job

SCHEMA = 1


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.records_dir = self.root / "records"

    @property
    def feature_cache(self) -> Path:
        return self.root / "cache" / "features"

    def path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def get(self, key: str) -> Optional[dict]:
        p = self.path(key)
        return json.loads(p.read_text()) if p.exists() else None

    def is_done(self, key: str) -> bool:
        rec = self.get(key)
        return rec is not None and rec.get("status") == "ok"

    def write(self, record: dict) -> Path:
        """Temp file in the same directory + os.replace: a reader never sees half a record."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(record["key"])
        fd, tmp = tempfile.mkstemp(dir=self.records_dir, prefix=".tmp-", suffix=".part")  # never matches *.json
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return target

    def records(self) -> Iterator[dict]:
        """Every stored record; a write cut short by a kill leaves only a .part file, never read."""
        for p in sorted(self.records_dir.glob("*.json")):
            yield json.loads(p.read_text())


@lru_cache(maxsize=1)
def git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_record(job: Job, *, status: str, metrics: Optional[dict] = None, details: Optional[dict] = None,
                error: Optional[str] = None, timing: Optional[dict] = None, worker: Optional[dict] = None) -> dict:
    c = job.checkpoint
    return {
        "schema": SCHEMA,
        "key": job.key,
        "checkpoint": {"name": c.name, "arch": c.arch, "path": str(c.path) if c.path else None,
                       "sha256": None if c.random_init else job.ckpt_id, "random_init": c.random_init,
                       "init_seed": c.init_seed if c.random_init else None,
                       "preprocessing": c.preprocessing.as_dict(), "meta": c.meta},
        "task": {"name": job.task.name, "version": job.task.version, "split_sha256": job.split_sha256},
        "protocol": {"name": job.protocol.name, "version": job.protocol.version, "params": job.protocol.params},
        "seed": job.seed,
        "status": status,
        "metrics": metrics or {},
        "details": details or {},
        "error": error,
        "env": {"evalbench": evalbench.__version__, "git": git_revision(), "torch": torch.__version__,
                "python": platform.python_version(), **(worker or {})},
        "timing_s": timing or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
