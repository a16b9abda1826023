"""The stores (DESIGN.md §2, §6).

``RecordStore``: one JSON record per evaluation under ``RESULTS/records/<key>.json``, written
atomically by the driver, validated when read. ``ArtifactStore``: checkpoints and features by
identity under ``STORAGE/artifacts/`` (``--storage``, default: the results directory; any
path every Ray node sees), plus the file-hash memo under ``STORAGE/index/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from evalbench.core.atomic import sweep_temp, write_json
from evalbench.core.filehash import FileHashIndex
from evalbench.results.record import InvalidRecord, Record


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.problems: dict[str, str] = {}  # path -> why it is not a valid record

    def path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def _read(self, path: Path) -> Optional[Record]:
        try:
            rec = Record.from_dict(json.loads(path.read_bytes()))
            if rec.key != path.stem:
                raise InvalidRecord(f"its key {rec.key!r} is not its file name")
            return rec
        except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError and InvalidRecord are ValueErrors
            self.problems[str(path)] = f"{type(e).__name__}: {e}"
            return None

    def get(self, key: str) -> Optional[Record]:
        p = self.path(key)
        return self._read(p) if p.exists() else None

    def is_done(self, key: str) -> bool:
        rec = self.get(key)
        return rec is not None and rec.ok

    def write(self, record: Record) -> Path:
        self.problems.pop(str(self.path(record.key)), None)
        return write_json(self.path(record.key), record.to_dict())

    def records(self) -> Iterator[Record]:
        """Every valid stored record; invalid files are noted in ``problems`` and skipped."""
        for p in sorted(self.records_dir.glob("*.json")):
            rec = self._read(p)
            if rec is not None:
                yield rec

    def sweep(self) -> list[Path]:
        return sweep_temp(self.records_dir)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"

    def features_dir(self, identity: str) -> Path:
        return self.artifacts / "features" / identity

    def checkpoint_dir(self, identity: str) -> Path:
        return self.artifacts / "checkpoints" / identity

    def pretrain_state_dir(self, identity: str) -> Path:
        """The resumable state of a pretraining that has not finished (removed once it has)."""
        return self.artifacts / "pretrain-state" / identity

    def file_hashes(self) -> FileHashIndex:
        return FileHashIndex(self.root / "index" / "file-sha256.json")

    def sweep(self) -> list[Path]:
        return [p for d in (self.artifacts / "features", self.artifacts / "checkpoints") for p in sweep_temp(d)]

