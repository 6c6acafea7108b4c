"""Replay protection: the delivery ids already handled, in memory or in a SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Final, Protocol

DELIVERY_LOG_FILENAME: Final = "webhook-deliveries.db"
"""The receiver's delivery log in the state directory."""


class DeliveryLog(Protocol):
    """Remembers delivery ids already handled, so MLflow's retries and replays trigger nothing twice.

    ``claim`` is atomic: exactly one of several concurrent claims of the same id returns True.
    ``release`` forgets an id again (after a failed ``emit``, so MLflow's retry is processed).
    Implementations are thread-safe and bounded.
    """

    def claim(self, delivery_id: str) -> bool: ...

    def release(self, delivery_id: str) -> None: ...

    def __contains__(self, delivery_id: object) -> bool: ...

    def __len__(self) -> int: ...


class MemoryDeliveryLog:
    """In-process :class:`DeliveryLog` keeping the last ``max_entries`` ids (oldest evicted first).

    Eviction is safe in practice: an evicted id can only be replayed within the timestamp tolerance
    window, which would take more than ``max_entries`` deliveries inside that window. Lost on restart;
    use :class:`SqliteDeliveryLog` to survive one.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = None
            while len(self._ids) > self._max:
                self._ids.popitem(last=False)
            return True

    def release(self, delivery_id: str) -> None:
        with self._lock:
            self._ids.pop(delivery_id, None)

    def __contains__(self, delivery_id: object) -> bool:
        with self._lock:
            return delivery_id in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


class SqliteDeliveryLog:
    """:class:`DeliveryLog` in a SQLite file, so a restarted receiver still drops MLflow's retries.

    One table with a UNIQUE delivery id; ``claim`` is ``INSERT OR IGNORE`` (atomic across threads and
    processes sharing the file). Keeps the newest ``max_entries`` rows. The parent directory is
    created if needed. Call :meth:`close` when done.
    """

    def __init__(self, path: str | Path, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max = max_entries
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS deliveries ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " delivery_id TEXT NOT NULL UNIQUE,"
            " received_at REAL NOT NULL)"
        )

    def claim(self, delivery_id: str) -> bool:
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO deliveries (delivery_id, received_at) VALUES (?, ?)",
                (delivery_id, time.time()),
            )
            if cursor.rowcount != 1:
                return False
            self._conn.execute(
                "DELETE FROM deliveries WHERE seq <= (SELECT MAX(seq) FROM deliveries) - ?", (self._max,)
            )
            return True

    def release(self, delivery_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM deliveries WHERE delivery_id = ?", (delivery_id,))

    def __contains__(self, delivery_id: object) -> bool:
        if not isinstance(delivery_id, str):
            return False
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            return row is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def delivery_log(path: str | Path | None = None) -> DeliveryLog:
    """A :class:`SqliteDeliveryLog` at ``path`` when given, else a :class:`MemoryDeliveryLog`."""
    return SqliteDeliveryLog(path) if path is not None else MemoryDeliveryLog()
