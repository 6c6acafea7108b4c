"""Fixtures: a fake Kubernetes API server with KServe's controller, and backends talking to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_kube.controller import FakeKServe
from fake_kube.server import FakeKubeApi
from fake_kube.world import make_backend

from mlcanary.serving.kserve.backend import KServeBackend


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as server:
        yield server


@pytest.fixture
def kserve(api: FakeKubeApi) -> Iterator[FakeKServe]:
    with FakeKServe(api) as controller:
        yield controller


@pytest.fixture
def make(api: FakeKubeApi, kserve: FakeKServe) -> Callable[..., KServeBackend]:
    """``make(**kserve_settings)`` → a backend on the fake server."""

    def factory(**settings: Any) -> KServeBackend:
        return make_backend(api, **settings)

    return factory


@pytest.fixture
def backend(make: Callable[..., KServeBackend]) -> KServeBackend:
    return make()
