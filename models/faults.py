"""Fault injection for chaos tests and the demo's bad candidate.

:class:`FaultyModel` wraps a fitted model and, at prediction time, adds latency and fails a
deterministic share of calls — the way a model behind a flaky feature service or a slow new
dependency misbehaves in production while looking perfect offline — or inverts its scores, as a
label flip in a training pipeline does.
"""

from __future__ import annotations

import time
from typing import Any

# Knuth's multiplicative hash spreads consecutive call numbers evenly over [0, 1000).
_SPREAD = 2_654_435_761


class FaultyModel:
    """A model that is slow by ``extra_latency_ms``, raises on ``failure_share`` of calls and, with
    ``invert``, answers with the classes swapped (probability p becomes 1 − p).

    The n-th call fails when ``(n · 2654435761) mod 2³² mod 1000 < failure_share · 1000``, so the
    failures are spread evenly and the same sequence of calls always fails the same way. The first
    ``healthy_calls`` calls never fail: a dependency that breaks under live load, after the
    server's warm-up and release preflight have passed (which would otherwise refuse it).
    """

    def __init__(
        self,
        inner: Any,
        *,
        failure_share: float = 0.0,
        extra_latency_ms: float = 0.0,
        healthy_calls: int = 0,
        invert: bool = False,
    ) -> None:
        if not 0.0 <= failure_share <= 1.0:
            raise ValueError(f"failure_share must be within [0, 1], got {failure_share}")
        if extra_latency_ms < 0:
            raise ValueError(f"extra_latency_ms must be >= 0, got {extra_latency_ms}")
        self.inner = inner
        self.failure_share = failure_share
        self.extra_latency_ms = extra_latency_ms
        self.healthy_calls = healthy_calls
        self.invert = invert
        self.calls = 0

    @property
    def feature_names_in_(self) -> Any:
        return self.inner.feature_names_in_

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.extra_latency_ms:
            time.sleep(self.extra_latency_ms / 1000.0)
        if self.calls <= getattr(self, "healthy_calls", 0):
            return
        if (self.calls * _SPREAD) % 2**32 % 1000 < self.failure_share * 1000:
            raise RuntimeError("injected fault: the feature service timed out")

    def predict_proba(self, x: Any) -> Any:
        self._maybe_fail()
        proba = self.inner.predict_proba(x)
        return proba[:, ::-1] if getattr(self, "invert", False) else proba

    def predict(self, x: Any) -> Any:
        self._maybe_fail()
        labels = self.inner.predict(x)
        return 1 - labels if getattr(self, "invert", False) else labels
