"""The KServe backend on the fake API server, shaped like :class:`mlcanary.testing.fakes.FakeServingBackend`
so the rollout engine's own tests run against it unchanged (crash injection, ``calls``,
``candidate_ready = False`` breaking the candidate's model as a crashed pod would)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fake_kube.controller import FakeKServe
from fake_kube.server import FakeKubeApi
from mlcanary.config import KServeSettings
from mlcanary.rollout.serving import ServingStatus
from mlcanary.serving.kserve.backend import KServeBackend
from mlcanary.serving.kserve.kube import KubeApi, api_client
from mlcanary.testing.fakes import _Crashable


def storage_uri(model: str, version: str) -> str:
    """Where the fake registry keeps a version (what a real resolver would return)."""
    return f"s3://models/{model}/{version}"


def make_backend(api: FakeKubeApi, **settings: Any) -> KServeBackend:
    """A ``KServeBackend`` talking HTTP to ``api`` (short timeouts: failures show quickly)."""
    options = {
        "api_url": api.url,
        "ready_timeout_s": 10.0,
        "request_timeout_s": 2.0,
        "backoff_s": 0.01,
        "arm_cache_s": 0.0,  # no pause leaving the shadow phase (a test sets it to see the pause)
    }
    ks = KServeSettings(**(options | settings))
    kube = KubeApi(
        api_client(api_url=api.url),
        timeout_s=ks.request_timeout_s,
        retries=ks.retries,
        backoff_s=ks.backoff_s,
    )
    return KServeBackend(ks, kube, storage_uri)


class CrashableKServe(_Crashable):
    """``KServeBackend`` with ``FakeServingBackend``'s test hooks."""

    def __init__(self, backend: KServeBackend, controller: FakeKServe) -> None:
        super().__init__()
        self.backend = backend
        self.controller = controller
        self.models: set[str] = set()

    def deploy(
        self, model: str, champion: str, candidate: str | None = None, candidate_percent: int = 0
    ) -> ServingStatus:
        self._enter("deploy")
        self.models.add(model)
        return self.backend.deploy(model, champion, candidate, candidate_percent)

    def set_traffic(self, model: str, candidate_percent: int) -> ServingStatus:
        self._enter("set_traffic")
        return self.backend.set_traffic(model, candidate_percent)

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        self._enter("set_shadow")
        return self.backend.set_shadow(model, share)

    def promote(self, model: str) -> ServingStatus:
        self._enter("promote")
        return self.backend.promote(model)

    def rollback(self, model: str) -> ServingStatus:
        self._enter("rollback")
        return self.backend.rollback(model)

    def status(self, model: str) -> ServingStatus:
        return self.backend.status(model)

    @property
    def candidate_ready(self) -> bool:
        return all(
            arm.ready
            for model in self.models
            for name, arm in self.status(model).arms.items()
            if name == "candidate"
        )

    @candidate_ready.setter
    def candidate_ready(self, ready: bool) -> None:
        if ready:
            raise NotImplementedError("a broken model stays broken")
        for model in self.models:
            candidate = self.status(model).arms.get("candidate")
            if candidate is not None and candidate.version is not None:
                self.controller.break_model(
                    storage_uri(model, candidate.version), "container crashed: OOMKilled"
                )
        # The controller reports it on its next pass; a crash is only "seen" once the status says so.
        deadline = time.monotonic() + 5
        while self.candidate_ready and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def served(self) -> dict[str, dict[str, str | None]]:
        return {
            model: {arm: status.version for arm, status in self.status(model).arms.items()}
            for model in self.models
        }


@contextmanager
def kserve_serving(**settings: Any) -> Iterator[tuple[FakeKubeApi, FakeKServe, CrashableKServe]]:
    """A fake API server, KServe's controller on it, and the crash-injectable backend."""
    with FakeKubeApi() as api, FakeKServe(api) as controller:
        yield api, controller, CrashableKServe(make_backend(api, **settings), controller)
