"""Shared fixtures: one real MLflow SQLite store per test session, a fresh model name per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_inbox import Inbox, running_inbox
from pg_server import EmbeddedPostgres, embedded_postgres
from sqlalchemy import MetaData, create_engine

from mlcanary.config import Settings, load_settings
from mlcanary.registry.mlflow_registry import MlflowRegistry, registry_from_settings
from mlcanary.runtime.env import quiet_defaults

REPO_ROOT = Path(__file__).resolve().parent.parent
_names = itertools.count(1)

# Quiet MLflow for every test process, as the CLI does (CI has no telemetry endpoint to reach anyway).
quiet_defaults()


@pytest.fixture(autouse=True)
def _captured_output_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands see what a pipe or CI log would: no terminal and no ``COLUMNS`` (pytest-xdist's
    workers set ``COLUMNS=80``, which would narrow every table a test reads)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="session")
def mlflow_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory whose mlflow.db is shared by the whole session (creating one costs ~4 s)."""
    return tmp_path_factory.mktemp("mlcanary-state")


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(mlflow_state: Path) -> SettingsFactory:
    """Settings on the session's MLflow store with a model name unique to this test.

    Keyword arguments are dotted overrides, e.g. ``make_settings(**{"model.estimator": "..."})``.
    Small data keeps training well under a second.
    """
    name = f"model-{next(_names)}"

    def factory(**overrides: Any) -> Settings:
        base = {
            "state_dir": str(mlflow_state),
            "model.name": name,
            "model.estimator": "logistic_regression",
            "data.synthetic.rows": 3000,
            "training.reference_rows": 500,
        }
        return load_settings("local", config_dir=REPO_ROOT / "configs", env={}, overrides=base | overrides)

    return factory


@pytest.fixture
def registry(make_settings: SettingsFactory) -> MlflowRegistry:
    return registry_from_settings(make_settings())


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server for the test process, started on first use (see tests/pg_server.py)."""
    with embedded_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty inference-log database: a SQLite file, then a fresh database on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inference.db'}"
    url: str = request.getfixturevalue("_postgres_log_database")
    # Dropping the tables is ten times cheaper than a database per test.
    engine = create_engine(url)
    try:
        # Every table there, not only the log's: running sums and leases live beside it.
        existing = MetaData()
        existing.reflect(engine)
        existing.drop_all(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def _postgres_log_database(postgres: EmbeddedPostgres) -> str:
    return postgres.create_database("inference_log_tests")


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """A local HTTP endpoint recording what is POSTed to it (see ``tests/http_inbox.py``)."""
    with running_inbox() as server:
        yield server


@pytest.fixture
def kserve_backend() -> Iterator[Any]:
    """The KServe backend on a fake Kubernetes API server whose KServe controller runs in-process,
    with ``FakeServingBackend``'s hooks (``fail_on``, ``calls``, ``candidate_ready``)."""
    from fake_kube.world import kserve_serving

    with kserve_serving() as (_api, _controller, backend):
        yield backend
