"""Errors Envoy answered on an arm's behalf, read from its proxy-error log.

When a model server is down, hung or resets the connection, Envoy answers the client itself (503
with response flag ``UF``/``UC``/``URX``, 504 with ``UT``) and the server logs nothing, so the
inference log never sees these requests. Envoy writes each response that carries a response flag
to a second, small access log (:attr:`EnvoyLayout.proxy_errors_log_path`; the full access log is
not read: it grows with every request). This module counts, per arm, the 5xx among them whose
upstream cluster is that arm — over the release so far and over the last tick's window — which the
metrics source adds to the arm's error counts. Lines that are not complete JSON (a line Envoy is
still writing) are skipped; a flag without a 5xx (a client that hung up: ``DC``) is not an error of
the arm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlcanary.config import Settings
from mlcanary.rollout.arms import ARMS, Arm
from mlcanary.rollout.measurements import ProxyErrorCount
from mlcanary.serving.local.envoy_config import EnvoyLayout


def _proxy_answered(path: Path) -> Iterator[tuple[datetime, Arm]]:
    """(start time, arm) of every 5xx Envoy answered itself for an arm's cluster."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
                code = int(entry.get("response_code") or 0)
                started = datetime.fromisoformat(str(entry["start_time"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            arm = entry.get("upstream_cluster")
            flags = str(entry.get("response_flags") or "-")
            if arm in ARMS and code >= 500 and flags != "-":
                yield started, arm


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def count_proxy_errors(
    path: Path, *, start: datetime, window_start: datetime, now: datetime
) -> dict[Arm, ProxyErrorCount]:
    """Per arm, the proxy-answered 5xx of requests started in ``[start, now]`` and, of those, in
    ``[window_start, now]``. A missing log means none yet (Envoy creates it on its first line)."""
    start, window_start, now = (_aware(t) for t in (start, window_start, now))
    counts = {arm: [0, 0] for arm in ARMS}
    answered = _proxy_answered(path) if path.exists() else iter(())
    for started, arm in answered:
        if start <= started <= now:
            counts[arm][0] += 1
            if started >= window_start:
                counts[arm][1] += 1
    return {arm: ProxyErrorCount(total, window) for arm, (total, window) in counts.items()}


@dataclass(frozen=True)
class EnvoyProxyErrors:
    """The local stack's proxy errors, as :class:`~mlcanary.telemetry.metrics.StoreMetricsSource`
    asks for them (raises ``OSError`` when the log cannot be read)."""

    path: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvoyProxyErrors:
        return cls(EnvoyLayout.from_settings(settings).proxy_errors_log_path)

    def __call__(self, start: datetime, window_start: datetime, now: datetime) -> dict[Arm, ProxyErrorCount]:
        return count_proxy_errors(self.path, start=start, window_start=window_start, now=now)
