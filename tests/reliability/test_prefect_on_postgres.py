"""Our rollout flows against a real Prefect server whose database is PostgreSQL.

A ``prefect server start`` (API only: ``--no-services --no-ui``) with
``PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://…`` on a fresh database of the
session's embedded PostgreSQL (``tests/pg_server.py``); ``start-canary`` and one ``canary-monitor``
tick run in this process against it, on the in-memory fakes of ``tests/flows``. The runs are read
back from PostgreSQL itself, so the test fails if Prefect kept them anywhere else.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pg_server import EmbeddedPostgres

import flows.canary as canary
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.runtime.env import child_env
from mlcanary.runtime.processes import start_process, wait_for_http
from mlcanary.testing.fakes import FakeWorld
from mlcanary.testing.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]

BIN = Path(__import__("sys").executable).parent
POLICY = RolloutPolicy(
    steps=[10, 50],
    min_bake_per_step="10m",
    min_duration="30m",
    max_duration="3h",
    tick_interval="5m",
    min_samples_per_arm=100,
)


@pytest.fixture(scope="module")
def prefect_on_postgres(
    postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(the API URL, the psycopg URL of the server's database); the boot time is printed."""
    database = f"prefect_{uuid.uuid4().hex[:8]}"
    postgres.create_database(database)
    home = tmp_path_factory.mktemp("prefect-pg")
    port = free_ports(1)[0]
    env = child_env() | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.url(database, driver="asyncpg"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    began = time.monotonic()
    process = start_process(
        "prefect", [*argv, "--no-services", "--no-ui"], state_dir=home, log_path=home / "prefect.log", env=env
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/health", timeout_s=180, process=process)
        print(f"prefect server on PostgreSQL healthy after {time.monotonic() - began:.1f} s")
        yield f"http://127.0.0.1:{port}/api", postgres.url(database, driver=None)
    finally:
        process.stop()


def test_start_canary_and_a_monitor_tick_run_on_a_prefect_server_backed_by_postgres(
    prefect_on_postgres: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, database_url = prefect_on_postgres
    world = FakeWorld(POLICY)
    monkeypatch.setattr(canary, "engine_for", world.make_engine)
    with temporary_settings({PREFECT_API_URL: api_url}):
        started = canary.start_canary("fraud", "2")
        world.clock.advance(timedelta(minutes=11))
        (ticked,) = canary.monitor("fraud")
        APILogWorker.drain_all(timeout=10)  # the runs' logs reach the server before it stops
    assert started["phase"] == "progressing"
    assert ticked["action"] == "step_up"
    assert ticked["traffic"] == 50

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id ORDER BY r.created"
        ).fetchall()
    assert rows == [("start-canary", "COMPLETED"), ("canary-monitor", "COMPLETED")]
