"""``PrometheusMetricsSource``: both arms of a release measured from Istio's standard metrics.

Per arm, over the release so far and over the last tick's window, it asks Prometheus (instant
queries, ``POST /api/v1/query``) for requests by status code, the latency histogram and latency
quantiles, using the PromQL templates of :class:`~mlcanary.config.sections.PrometheusSettings`. The arms'
workloads come from the serving backend (``workloads(model)``: Knative revisions'
``<revision>-deployment``, Standard mode's ``<isvc>-predictor``).

Errors a proxy answered itself for an arm (no healthy pod, connection refused or reset, timeout: a
crashed or crash-looping model server) never reach the arm's sidecar, so ``reporter="destination"``
misses them; ``proxy_errors_query`` counts them where they happen, at the sender's proxy
(``reporter="source"``, by the arm's Services and Envoy's response flags), and they are added to the
arm's routed requests and its 5xx, as the local stack does from Envoy's log. A ``URX`` (retries
exhausted) whose last attempt the pod did answer is counted on both sides: the error rate errs
towards rollback there, never towards promotion.

Missing data is never zero: an empty result or NaN (``histogram_quantile`` without traffic) is
"no data" — the arm then has 0 requests and no latency, which the judge's checks report as
inconclusive, never as a pass. Latency is used only once an arm has ``min_requests`` requests.
A failed query (unreachable, 4xx/5xx, ``status: error``) becomes a ``problem`` of the checks this
source feeds (their verdict is ``error``), never an exception.

Without the champion's P95 (or the candidate's histogram) the ``latency_p95`` check gets a
problem ("no latency data yet"), because a count of 0 slow requests would read as a pass.

Derived from the histogram (bucket resolution, so approximate): the mean and variance of
log-latency (each observation at its bucket's geometric midpoint) and the count of requests slower
than the champion's P95 (linear within the bucket, as ``histogram_quantile`` interpolates).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from mlcanary.config import PrometheusSettings
from mlcanary.rollout.measurements import ArmMetrics, Measurements, Percentiles
from mlcanary.rollout.state import ReleaseState
from mlcanary.rollout.stats import LATENCY_FLOOR_MS, MeanSummary

#: Checks whose numbers this source provides (see ``telemetry.sources``).
CHECKS: tuple[str, ...] = ("error_rate", "error_burst", "latency", "latency_p95")
QUANTILES: tuple[float, float, float] = (0.5, 0.95, 0.99)


class PrometheusError(RuntimeError):
    """A query could not be answered; the message names the query and why."""


class WorkloadMap(Protocol):
    """Which Kubernetes workloads serve each arm of ``model`` now (``KServeBackend.workloads``), and
    which Services the proxies route each arm's requests to (``KServeBackend.services``)."""

    def workloads(self, model: str) -> Mapping[str, list[str]]: ...

    def services(self, model: str) -> Mapping[str, list[str]]: ...


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (milliseconds; ``inf`` last)."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def per_bucket(self) -> list[tuple[float, float, float]]:
        """(lower, upper, count) of each bucket."""
        out, lower, previous = [], 0.0, 0.0
        for upper, cumulative in self.buckets:
            out.append((lower, upper, max(cumulative - previous, 0.0)))
            lower, previous = upper, cumulative
        return out

    def log_summary(self) -> MeanSummary | None:
        """Mean and variance of log-latency, each observation at its bucket's geometric midpoint."""
        n = self.count
        if n < 2:
            return None
        total = total_sq = 0.0
        for lower, upper, count in self.per_bucket():
            if not count:
                continue
            if math.isinf(upper):
                point = max(lower, LATENCY_FLOOR_MS)
            else:
                point = math.sqrt(max(lower, LATENCY_FLOOR_MS / 2) * max(upper, LATENCY_FLOOR_MS))
            value = math.log(max(point, LATENCY_FLOOR_MS))
            total += count * value
            total_sq += count * value * value
        return MeanSummary.from_sums(round(n), total, total_sq, log_scale=True)

    def above(self, threshold: float) -> float:
        """Observations above ``threshold`` (linear interpolation inside its bucket)."""
        found = 0.0
        for lower, upper, count in self.per_bucket():
            if lower >= threshold:
                found += count
            elif upper > threshold and not math.isinf(upper):
                found += count * (upper - threshold) / (upper - lower)
            elif math.isinf(upper) and upper > threshold:
                found += count  # unknown spread: all of the last bucket counts as slower
        return found


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The finite sample values of an instant vector (NaN and missing values left out)."""
    found = (_finite((series.get("value") or [None, None])[1]) for series in result)
    return [value for value in found if value is not None]


def _duration(seconds: float) -> str:
    return f"{max(math.ceil(seconds), 1)}s"


class PrometheusMetricsSource:
    """``MetricsSource`` over Prometheus (see the module docstring)."""

    def __init__(
        self,
        settings: PrometheusSettings,
        *,
        namespace: str,
        workloads: WorkloadMap,
        client: httpx.Client | None = None,
    ) -> None:
        if not settings.url:
            raise ValueError("telemetry.prometheus.url is not set")
        self.settings = settings
        self.namespace = namespace
        self.workloads = workloads
        self.client = client or httpx.Client(timeout=settings.timeout_s, trust_env=False)
        self.base = settings.url.rstrip("/")

    # -- Prometheus HTTP API ---------------------------------------------------------------------

    def query(self, promql: str, at: datetime) -> list[dict[str, Any]]:
        """An instant query's ``data.result`` (a vector), or PrometheusError."""
        try:
            response = self.client.post(
                f"{self.base}/api/v1/query", data={"query": promql, "time": f"{at.timestamp():.3f}"}
            )
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"Prometheus at {self.base} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(f"Prometheus answered HTTP {response.status_code} without JSON") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus refused the query (HTTP {response.status_code}, {body.get('errorType')}: "
                f"{body.get('error')}): {promql[:200]}"
            )
        data = body.get("data") or {}
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data.get("result")}]
        return list(data.get("result") or [])

    def _run(
        self, template: str, workloads: list[str], seconds: float, at: datetime, **extra: Any
    ) -> list[dict[str, Any]]:
        promql = string.Template(template).substitute(
            namespace=self.namespace,
            workloads="|".join(re.escape(w) for w in workloads),
            range=_duration(seconds),
            **extra,
        )
        return self.query(promql, at)

    def _proxy_errors(self, services: list[str], seconds: float, at: datetime) -> int:
        """5xx the sender's proxy answered for these Services: no series means none happened."""
        if not services:
            return 0
        result = self._run(
            self.settings.proxy_errors_query,
            [],
            seconds,
            at,
            services="|".join(re.escape(s) for s in services),
        )
        return round(sum(_finite_values(result)))

    # -- one arm ---------------------------------------------------------------------------------

    def _counts(self, workloads: list[str], seconds: float, at: datetime) -> tuple[float, float] | None:
        """(requests, 5xx) of an arm, or None when Prometheus has no finite sample."""
        found = False
        total = errors = 0.0
        for series in self._run(self.settings.requests_query, workloads, seconds, at):
            value = _finite((series.get("value") or [None, None])[1])
            if value is None:
                continue
            found = True
            total += value
            if str(series.get("metric", {}).get(self.settings.code_label, "")).startswith("5"):
                errors += value
        return (total, errors) if found else None

    def _histogram(self, workloads: list[str], seconds: float, at: datetime) -> Histogram | None:
        buckets: dict[float, float] = {}
        for series in self._run(self.settings.buckets_query, workloads, seconds, at):
            le = (
                _finite(series.get("metric", {}).get("le"))
                if series.get("metric", {}).get("le") != "+Inf"
                else math.inf
            )
            value = _finite((series.get("value") or [None, None])[1])
            if le is None or value is None:
                continue
            buckets[le] = buckets.get(le, 0.0) + value
        if not buckets or math.inf not in buckets:
            return None
        return Histogram(tuple(sorted(buckets.items())))

    def _percentiles(self, workloads: list[str], seconds: float, at: datetime) -> Percentiles | None:
        values = []
        for q in QUANTILES:
            result = self._run(self.settings.quantile_query, workloads, seconds, at, quantile=q)
            finite = _finite_values(result)
            if len(finite) != 1:
                return None  # NaN, empty or ambiguous: no data
            values.append(finite[0])
        return Percentiles(*values)

    def _arm(
        self,
        version: str,
        workloads: list[str],
        services: list[str],
        since: float,
        window: float,
        at: datetime,
    ) -> tuple[ArmMetrics, Histogram | None]:
        proxy_errors = self._proxy_errors(services, since, at)
        window_proxy_errors = self._proxy_errors(services, window, at) if proxy_errors else 0
        if not workloads:
            return ArmMetrics(
                version=version, proxy_errors=proxy_errors, window_proxy_errors=window_proxy_errors
            ), None
        counts = self._counts(workloads, since, at)
        window_counts = self._counts(workloads, window, at)
        requests, errors = (round(counts[0]), round(counts[1])) if counts else (0, 0)
        w_requests, w_errors = (round(window_counts[0]), round(window_counts[1])) if window_counts else (0, 0)
        histogram = latency = summary = None
        if requests >= self.settings.min_requests:
            histogram = self._histogram(workloads, since, at)
            latency = self._percentiles(workloads, since, at)
            summary = histogram.log_summary() if histogram else None
        arm = ArmMetrics(
            version=version,
            requests=requests,
            errors=errors,
            log_latency=summary,
            latency_ms=latency,
            window_requests=w_requests,
            window_errors=w_errors,
            proxy_errors=proxy_errors,
            window_proxy_errors=window_proxy_errors,
        )
        return arm, histogram

    def measure(self, release: ReleaseState, *, window_start: datetime, now: datetime) -> Measurements:
        """Both arms since the release started, and in the window since ``window_start``."""
        since = (now - release.started_at).total_seconds()
        window = (now - window_start).total_seconds()
        champion = ArmMetrics(version=release.champion_version)
        candidate = ArmMetrics(version=release.candidate_version)
        problems: dict[str, str] = {}
        try:
            serving = self.workloads.workloads(release.model)
            services = self.workloads.services(release.model)
            champion, champion_hist = self._arm(
                release.champion_version,
                list(serving.get("champion", [])),
                list(services.get("champion", [])),
                since,
                window,
                now,
            )
            candidate, candidate_hist = self._arm(
                release.candidate_version,
                list(serving.get("candidate", [])),
                list(services.get("candidate", [])),
                since,
                window,
                now,
            )
            if champion.latency_ms is None or (candidate.requests and candidate_hist is None):
                # "slow" needs the champion's P95 and the candidate's histogram; 0 would read as a pass.
                problems["latency_p95"] = (
                    f"no latency data yet: each arm needs {self.settings.min_requests} requests with a "
                    f"finite histogram (champion {champion.requests}, candidate {candidate.requests})"
                )
            else:
                p95 = champion.latency_ms.p95
                slow = {
                    "champion": round(champion_hist.above(p95)) if champion_hist else 0,
                    "candidate": round(candidate_hist.above(p95)) if candidate_hist else 0,
                }
                champion = ArmMetrics(**{**champion.__dict__, "slow": slow["champion"]})
                candidate = ArmMetrics(**{**candidate.__dict__, "slow": slow["candidate"]})
        except Exception as exc:  # a source measures and reports; it never fails the tick
            reason = f"{type(exc).__name__}: {exc}"[:300]
            problems = dict.fromkeys(CHECKS, reason)
        return Measurements(
            start=release.started_at,
            end=now,
            window_start=window_start,
            champion=champion,
            candidate=candidate,
            problems=problems,
        )
