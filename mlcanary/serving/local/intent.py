"""What was asked of the local backend, kept where every process sees it: the intent file, and the
lock that serialises mutating calls across threads and processes.

Both live in ``<state>/serving/``: ``intent.json`` (model, champion and candidate versions, and the
version being promoted while a promotion runs) and ``backend.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from mlcanary.rollout.serving import ServingError
from mlcanary.runtime.atomic_files import write_atomic


@dataclass(frozen=True)
class Intent:
    """What the last mutating call asked of ``model``'s arms.

    It is intent, not observation: it lets a promotion interrupted after the candidate server
    stopped converge, and tells a crashed candidate (refuse to promote) from one that was never
    deployed or already promoted (a no-op).
    """

    model: str
    champion: str | None = None
    candidate: str | None = None
    promoting: str | None = None


class IntentFile:
    """The intent of one state directory, read and replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, model: str) -> Intent:
        """The recorded intent for ``model`` (empty if none, unreadable, or for another model)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Intent(model)
        if not isinstance(data, dict) or data.get("model") != model:
            return Intent(model)

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return Intent(model, text("champion"), text("candidate"), text("promoting"))

    def write(self, intent: Intent) -> None:
        """Replace the intent (fsynced, then renamed into place)."""
        payload = {**asdict(intent), "updated_at": datetime.now(UTC).isoformat()}
        write_atomic(self.path, json.dumps(payload))


class BackendLock:
    """Serialises mutating calls across threads and processes; re-entrant within a thread.

    A thread lock first, then ``flock`` on ``path`` (held while the outermost :meth:`hold` runs);
    either waits at most ``timeout_s`` and then raises :class:`ServingError`.
    """

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._handle: IO[Any] | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._thread_lock.acquire(timeout=self.timeout_s):
            raise ServingError(f"another thread holds the local backend for over {self.timeout_s:g}s")
        try:
            if self._depth == 0:
                self._handle = self._acquire_file()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._handle is not None:
                    fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
                    self._handle.close()
                    self._handle = None
        finally:
            self._thread_lock.release()

    def _acquire_file(self) -> IO[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held until the outermost hold() ends)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise ServingError(
                        f"another process holds {self.path} for over {self.timeout_s:g}s"
                    ) from None
                time.sleep(0.05)
