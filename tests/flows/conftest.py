"""Prefect's test harness: a temporary API server for the whole session (about 12 s once)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before the server starts: no analytics heartbeat (its SQLite lock noise) and a start-up timeout
# long enough for a cold database on 2 cores.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # The per-run heartbeat thread costs ~1 s per flow run and tests nothing of ours.
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield
