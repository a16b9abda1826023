"""The stores (DESIGN.md §2, §6).

``RecordStore``: one JSON record per evaluation under ``RESULTS/records/<key>.json``, written
atomically by the driver, validated when read. ``ArtifactStore``: checkpoints and features by
identity under ``STORAGE/artifacts/`` (``--storage``, default: the results directory; any
path every Ray node sees), plus the file-hash memo under ``STORAGE/index/``.

One run at a time writes into a results directory: ``RecordStore.lock()`` holds an exclusive
``flock`` on ``RESULTS/.evalbench.lock`` for the whole run. A second run waits for it (saying
who holds it), then finds the first run's records and skips them, so no evaluation runs twice.
The kernel drops the lock when its holder exits, however it exits (a killed run never leaves a
stale lock). ``flock`` is per machine: runs on several hosts sharing a results directory over NFS
are not serialised by it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from evalbench.core.atomic import sweep_temp, write_json
from evalbench.core.errors import PreflightError
from evalbench.core.filehash import FileHashIndex
from evalbench.results.record import InvalidRecord, Record

LOCK_FILE = ".evalbench.lock"


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
        except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, InvalidRecord: ValueErrors
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

    @contextmanager
    def lock(self, *, wait: bool = True, say: Callable[[str], None] = lambda _: None) -> Iterator[None]:
        """Hold the store's run lock; if another run holds it, wait for it (``say`` tells the user) or,
        with ``wait=False``, raise a PreflightError naming the holder."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise PreflightError(f"another run ({holder}) is writing into {self.root}; wait for it to finish "
                                         "or use another --results directory") from None
                say(f"another run ({holder}) is writing into {self.root}; waiting for it to finish, then this run "
                    "skips every evaluation it stored")
                t0 = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_EX)
                say(f"the other run finished after {time.monotonic() - t0:.0f} s of waiting; going on")
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
            yield
            os.ftruncate(fd, 0)  # no holder (a killed holder's line stays, but its lock is gone)
        finally:
            os.close(fd)  # releases the lock (a killed process releases it the same way)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


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

