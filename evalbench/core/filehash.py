"""Content hashes of files, memoised on (path, size, mtime_ns) so unchanged files are not re-read.

The memo is a JSON file in the store (``index/file-sha256.json``); planning a rerun of 200
checkpoints reads 200 stat results, not 20 GB. A changed size or mtime re-hashes the file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

from evalbench.core.atomic import write_json

HashFile = Callable[[Path], str]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileHashIndex:
    """``index(path) -> sha256``, memoised; ``save()`` writes new entries back (atomically)."""

    def __init__(self, memo_path: Optional[Path]) -> None:
        self.memo_path = memo_path
        self._memo: dict[str, dict] = {}
        self._dirty = False
        self.hashed: list[str] = []  # paths actually read in this process (for tests and logs)
        if memo_path is not None and memo_path.is_file():
            try:
                loaded = json.loads(memo_path.read_text())
                self._memo = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._memo = {}  # a damaged memo only costs re-hashing

    def __call__(self, path: Path) -> str:
        path = Path(path).resolve()
        st = os.stat(path)
        key = str(path)
        hit = self._memo.get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return str(hit["sha256"])
        digest = sha256_file(path)
        self.hashed.append(key)
        self._memo[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self._dirty = True
        return digest

    def save(self) -> None:
        if self._dirty and self.memo_path is not None:
            write_json(self.memo_path, self._memo, indent=None)
            self._dirty = False
