"""Replacing a small state file so that a reader, or a restart after a crash, sees the old content
or the new, never a part of either."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: written to a temp file beside it (a name no other process or
    thread uses), fsynced, renamed over ``path`` (atomic on POSIX), then the directory fsynced so the
    rename itself survives a power loss. The parent directory is created if missing; on any failure
    the temp file is removed and ``path`` is left as it was. A rename is also what file watchers such
    as Envoy's RDS notice (they ignore in-place writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["write_atomic"]
