"""``MetricsSource`` over the inference-log store: both arms measured over the same window.

Both arms come from the log's running sums (:func:`mlcanary.telemetry.incremental.incremental_aggregate`):
each tick folds in only what changed since the last one and reads a few hundred summary rows, so its
cost does not grow with the window; latency percentiles come from log-spaced histograms (within 1 %
of the exact ones). The shadow phase still aggregates its rows in SQL on every tick, reading at most
``max_latency_rows`` latencies per arm for the percentiles.
Rows are selected by model, arm *and* version, so traffic served before the release (or by another
version on the same arm) never leaks in. Label outcomes cover only requests received before
``now − label_delay`` (:attr:`Measurements.label_cutoff`): younger ones have not had the time to get
their label. They count whole 10-second buckets: from the first bucket edge after the release
started to the last one before the cutoff (up to 10 s less at each end), so that a tick looks no
request's label up.

In the shadow phase the candidate's arm is its answers to mirrored copies, paired with the
champion's answers to the same requests (:func:`mlcanary.telemetry.shadow.measure_shadow`).

Requests the proxy answered for an arm whose server could not (a crashed or hung server logs
nothing) come from an optional ``proxy_errors`` callable (the local stack's Envoy log, see
:mod:`mlcanary.serving.local.proxy_errors`) and are added to the arm's error counts; when it cannot
be read, the error checks report the problem rather than a rate without them.

Drift and paired agreement need the models themselves; they are measured by an optional ``extras``
callable (:class:`mlcanary.signals.model_signals.ModelSignals` in the wiring), so this module stays a
pure SQL adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from mlcanary.rollout.arms import Arm
from mlcanary.rollout.measurements import ArmMetrics, Measurements, ProxyErrorCount
from mlcanary.rollout.model_outputs import ArmOutputs, unmeasured_metrics
from mlcanary.rollout.policy import LABEL_METRICS
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.telemetry.aggregate import ArmAggregate, arm_metrics
from mlcanary.telemetry.incremental import incremental_aggregate
from mlcanary.telemetry.rollup_tables import bucket_edge
from mlcanary.telemetry.shadow import measure_shadow
from mlcanary.telemetry.store import InferenceLogStore

__all__ = ["LOG_METRICS", "StoreMetricsSource", "arm_metrics"]

Extras = Callable[[ReleaseState, datetime, datetime, Measurements], Measurements]
#: ``(release start, window start, now) → per-arm proxy-answered 5xx``; raises ``OSError`` when unreadable.
ProxyErrors = Callable[[datetime, datetime, datetime], Mapping[Arm, ProxyErrorCount]]
#: The checks that count errors (and so the proxy's).
PROXY_ERROR_METRICS: tuple[str, ...] = ("error_rate", "error_burst")

#: The metrics that come from the inference log (reported as problems when it cannot be read).
LOG_METRICS: tuple[str, ...] = (
    "error_rate",
    "latency",
    "latency_p95",
    "positive_rate",
    "error_burst",
    *sorted(LABEL_METRICS),
)


class StoreMetricsSource:
    """Measures a release from the inference log (see the module docstring)."""

    def __init__(
        self,
        store: InferenceLogStore,
        *,
        max_latency_rows: int = 50_000,
        extras: Extras | None = None,
        label_delay: timedelta = timedelta(0),
        proxy_errors: ProxyErrors | None = None,
    ) -> None:
        self.store = store
        self.max_latency_rows = max_latency_rows
        self.extras = extras
        self.label_delay = label_delay
        self.proxy_errors = proxy_errors

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements:
        """Cumulative metrics of both arms since the release started (see the module docstring)."""
        versions = {"champion": release.champion_version, "candidate": release.candidate_version}
        # Labelled requests in whole 10-s buckets: their sums then come from the running sums
        # alone, and no ragged end looks each request's label up (a probe per request, which
        # deepens as the log grows).
        label_cutoff = bucket_edge(now - self.label_delay)
        shadowing = release.phase == Phase.SHADOWING
        try:
            if shadowing:
                # Mirrored copies and their pairs; drift and re-scoring do not apply (no extras).
                shadow = measure_shadow(
                    self.store,
                    release,
                    window_start=window_start,
                    now=now,
                    max_latency_rows=self.max_latency_rows,
                    label_cutoff=label_cutoff,
                )
                if self.proxy_errors is not None:
                    shadow = self._with_proxy_errors(shadow, self.proxy_errors)
                return shadow
            # "Slow" means slower than the champion's P95 over the same window, for both arms.
            found = incremental_aggregate(
                self.store,
                release.model,
                release.started_at,
                now,
                versions={arm: v or "" for arm, v in versions.items()},
                window_start=window_start,
                slow_reference="champion",
                label_cutoff=label_cutoff,
                label_since=bucket_edge(release.started_at, up=True),
            )
        except SQLAlchemyError as exc:
            reason = f"inference log unreadable: {type(exc).__name__}: {exc}"[:300]
            return Measurements(
                start=release.started_at,
                end=now,
                window_start=window_start,
                champion=ArmMetrics(version=release.champion_version),
                candidate=ArmMetrics(version=release.candidate_version),
                problems=dict.fromkeys(LOG_METRICS, reason),
            )
        champion, candidate = (
            arm_metrics(found.get(arm) or ArmAggregate(arm=arm), version) for arm, version in versions.items()
        )
        measurements = Measurements(
            start=release.started_at,
            end=now,
            window_start=window_start,
            champion=champion,
            candidate=candidate,
            label_cutoff=label_cutoff,
            unmeasured=unmeasured_metrics(
                [
                    ArmOutputs(name, arm.version, arm.answered, arm.predictions, arm.probabilities)
                    for name, arm in (("champion", champion), ("candidate", candidate))
                ]
            ),
        )
        if self.proxy_errors is not None:
            measurements = self._with_proxy_errors(measurements, self.proxy_errors)
        if self.extras is not None:
            measurements = self.extras(release, window_start, now, measurements)
        return measurements

    @staticmethod
    def _with_proxy_errors(m: Measurements, source: ProxyErrors) -> Measurements:
        try:
            found = source(m.start, m.window_start, m.end)
        except OSError as exc:
            reason = f"proxy error log unreadable: {type(exc).__name__}: {exc}"[:300]
            return replace(m, problems={**m.problems, **dict.fromkeys(PROXY_ERROR_METRICS, reason)})
        none = ProxyErrorCount(0, 0)
        champion, candidate = (found.get(arm, none) for arm in ("champion", "candidate"))
        return replace(
            m,
            champion=replace(m.champion, proxy_errors=champion.total, window_proxy_errors=champion.window),
            candidate=replace(
                m.candidate, proxy_errors=candidate.total, window_proxy_errors=candidate.window
            ),
        )
