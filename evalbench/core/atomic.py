"""Atomic writes, one helper for every file and directory evalbench stores (DESIGN.md §6).

A write goes to a temp path beside its target and is renamed onto it when complete, so a
reader (or a rerun after a kill) sees the old state or the new one, never half of one. Temp
names start with ``.tmp-`` and carry the writer's host and pid, so leftovers of dead writers
can be swept without touching a live writer's files.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TEMP_PREFIX = ".tmp-"
STALE_AFTER_S = 24 * 3600  # a temp file of another host is swept only after this long


def _temp_name() -> str:
    host = socket.gethostname().replace("-", "_")
    return f"{TEMP_PREFIX}{host}-{os.getpid()}-{secrets.token_hex(4)}.part"


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; the caller writes a file or a directory there.

    On a clean exit it replaces ``target`` (a file is overwritten; a directory that already
    exists is kept, since another writer produced the same identity first). On an exception
    the temp path is removed and the exception propagates.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / _temp_name()
    try:
        yield tmp
        if tmp.is_dir():
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # same identity written by someone else
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_bytes(target: Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(target)


def write_text(target: Path, text: str) -> Path:
    return write_bytes(target, text.encode())


def write_json(target: Path, obj: Any, *, indent: int | None = 1) -> Path:
    return write_text(target, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def _writer_is_dead(name: str, age_s: float) -> bool:
    try:
        host, pid, _ = name[len(TEMP_PREFIX):].split("-", 2)
    except ValueError:
        return age_s > STALE_AFTER_S
    if host != socket.gethostname().replace("-", "_"):
        return age_s > STALE_AFTER_S
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return True
    except PermissionError:
        return False
    return False


def sweep_temp(directory: Path) -> list[Path]:
    """Remove temp files/dirs left in ``directory`` (not recursive) by writers that died."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    now = time.time()
    for p in directory.glob(f"{TEMP_PREFIX}*"):
        try:
            age = now - p.lstat().st_mtime
        except FileNotFoundError:
            continue
        if _writer_is_dead(p.name, age):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed
