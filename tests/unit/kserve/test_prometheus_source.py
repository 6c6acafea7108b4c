"""PrometheusMetricsSource against a local HTTP server answering with Prometheus API JSON, empty and
NaN results included, and the per-check routing of sources."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from mlcanary.config import PrometheusSettings
from mlcanary.rollout.checks import evaluate_checks
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.telemetry.prometheus import Histogram, PrometheusMetricsSource
from mlcanary.telemetry.sources import CombinedMetricsSource
from mlcanary.testing.fakes import ScriptedMetrics, steady_arm

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
RELEASE = ReleaseState(
    model="fraud",
    candidate_version="2",
    champion_version="1",
    phase=Phase.PROGRESSING,
    step_index=0,
    traffic=20,
    started_at=NOW - timedelta(hours=1),
    step_started_at=NOW - timedelta(hours=1),
)
WORKLOADS = {
    "champion": ["fraud-predictor-00001-deployment"],
    "candidate": ["fraud-predictor-00002-deployment"],
}
BOUNDS = ["5", "10", "25", "50", "100", "250", "+Inf"]

Answer = Callable[[str, str, str], Any]  # (kind, arm, range) → data.result, or an error body


def vector(*series: tuple[dict[str, str], Any]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [NOW.timestamp(), str(value)]} for labels, value in series]


def codes(**by_code: float) -> list[dict[str, Any]]:
    return vector(*(({"response_code": code.lstrip("c")}, n) for code, n in by_code.items()))


def buckets(*cumulative: float) -> list[dict[str, Any]]:
    return vector(*(({"le": le}, n) for le, n in zip(BOUNDS, cumulative, strict=True)))


class FakePrometheus:
    """Answers ``/api/v1/query`` from ``answer(kind, arm, range)``; records every PromQL text."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                promql = parse_qs(raw)["query"][0]
                outer.queries.append(promql)
                kind = (
                    "quantile"
                    if promql.startswith("histogram_quantile")
                    else "buckets"
                    if "bucket" in promql
                    else "proxy"
                    if 'reporter="source"' in promql
                    else "requests"
                )
                arm = "candidate" if "00002" in promql else "champion"
                window = re.search(r"\[(\d+s)\]", promql).group(1)  # type: ignore[union-attr]
                if kind == "quantile":
                    kind += re.match(r"histogram_quantile\(([0-9.]+)", promql).group(1)  # type: ignore[union-attr]
                result = outer.answer(kind, arm, window)
                if isinstance(result, tuple):  # (HTTP status, body)
                    status, body = result
                else:
                    status, body = (
                        200,
                        {"status": "success", "data": {"resultType": "vector", "result": result}},
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


SERVICES = {"champion": ["fraud-predictor-00001"], "candidate": ["fraud-predictor-00002"]}


class Serving:
    def workloads(self, model: str) -> dict[str, list[str]]:
        assert model == "fraud"
        return WORKLOADS

    def services(self, model: str) -> dict[str, list[str]]:
        assert model == "fraud"
        return SERVICES


def healthy(kind: str, arm: str, window: str) -> Any:
    cumulative = window == "3600s"
    if kind == "proxy":
        return []  # no series: the proxies answered nothing themselves
    if kind == "requests":
        if arm == "champion":
            return codes(c200=800, c503=8) if cumulative else codes(c200=80)
        return codes(c200=190, c500=10, c404=2) if cumulative else codes(c200=19, c500=3)
    if kind == "buckets":
        return (
            buckets(100, 400, 700, 780, 800, 808, 808)
            if arm == "champion"
            else buckets(0, 50, 120, 170, 190, 200, 202)
        )
    quantiles = {
        "champion": {"0.5": 11.0, "0.95": 48.0, "0.99": 90.0},
        "candidate": {"0.5": 22.0, "0.95": 95.0, "0.99": 180.0},
    }
    return vector(({}, quantiles[arm][kind.removeprefix("quantile")]))


@pytest.fixture
def prometheus(request: pytest.FixtureRequest) -> Iterator[FakePrometheus]:
    with FakePrometheus(getattr(request, "param", healthy)) as server:
        yield server


def source(server: FakePrometheus, **settings: Any) -> PrometheusMetricsSource:
    return PrometheusMetricsSource(
        PrometheusSettings(url=server.url, **settings), namespace="models", workloads=Serving()
    )


def measure(server: FakePrometheus, **settings: Any) -> Measurements:
    return source(server, **settings).measure(RELEASE, window_start=NOW - timedelta(minutes=5), now=NOW)


def test_both_arms_from_istio_metrics(prometheus: FakePrometheus) -> None:
    m = measure(prometheus)
    assert m.problems == {}
    assert (m.champion.requests, m.champion.errors) == (808, 8)
    assert (m.candidate.requests, m.candidate.errors) == (202, 10)  # a 404 is not a 5xx
    assert (m.candidate.window_requests, m.candidate.window_errors) == (22, 3)
    assert m.champion.latency_ms is not None
    assert (m.champion.latency_ms.p50, m.champion.latency_ms.p95, m.champion.latency_ms.p99) == (
        11.0,
        48.0,
        90.0,
    )
    assert m.candidate.log_latency is not None
    assert m.champion.log_latency is not None
    assert m.candidate.log_latency.n == 202
    assert m.candidate.log_latency.mean > m.champion.log_latency.mean  # slower, as the buckets say
    # Slower than the champion's P95 (48 ms): interpolated in the 25–50 bucket, then everything above.
    assert m.champion.slow == round(80 * 2 / 25 + 20 + 8)
    assert m.candidate.slow == round(50 * 2 / 25 + 20 + 12)
    # The templates were filled in: namespace, the arm's workload (escaped), the ranges.
    assert any(
        'destination_workload=~"fraud\\-predictor\\-00002\\-deployment"' in q for q in prometheus.queries
    )
    assert all(
        'destination_workload_namespace="models"' in q or 'destination_service_namespace="models"' in q
        for q in prometheus.queries
    )
    assert {re.search(r"\[(\d+s)\]", q).group(1) for q in prometheus.queries} == {"3600s", "300s"}  # type: ignore[union-attr]


def empty_candidate(kind: str, arm: str, window: str) -> Any:
    return [] if arm == "candidate" else healthy(kind, arm, window)


@pytest.mark.parametrize("prometheus", [empty_candidate], indirect=True)
def test_an_empty_result_is_no_data_never_zero(prometheus: FakePrometheus) -> None:
    m = measure(prometheus)
    assert m.candidate.requests == 0
    assert m.candidate.error_rate is None  # not 0.0
    assert m.candidate.latency_ms is None
    assert m.candidate.log_latency is None
    checks = {c.name: c for c in evaluate_checks(RolloutPolicy(), m)}
    assert checks["error_rate"].verdict == "inconclusive"
    assert checks["latency"].verdict == "inconclusive"


def nan_latency(kind: str, arm: str, window: str) -> Any:
    if kind.startswith("quantile"):
        return vector(({}, "NaN"))
    if kind == "requests" and arm == "candidate":
        return codes(c200="NaN", c500=float("nan"))  # type: ignore[arg-type]
    return healthy(kind, arm, window)


@pytest.mark.parametrize("prometheus", [nan_latency], indirect=True)
def test_nan_is_no_data_never_zero(prometheus: FakePrometheus) -> None:
    m = measure(prometheus)
    assert m.champion.latency_ms is None  # histogram_quantile gave NaN
    assert m.candidate.requests == 0
    assert m.candidate.error_rate is None
    assert "no latency data" in m.problems["latency_p95"]  # 0 slow requests would read as a pass
    checks = {c.name: c for c in evaluate_checks(RolloutPolicy(), m)}
    assert checks["latency_p95"].verdict == "error"
    assert checks["latency"].verdict == "inconclusive"


def few_requests(kind: str, arm: str, window: str) -> Any:
    if kind == "requests" and arm == "candidate":
        return codes(c200=12)
    return healthy(kind, arm, window)


@pytest.mark.parametrize("prometheus", [few_requests], indirect=True)
def test_latency_waits_for_the_minimum_request_count(prometheus: FakePrometheus) -> None:
    m = measure(prometheus, min_requests=20)
    assert m.candidate.requests == 12
    assert m.candidate.latency_ms is None
    assert m.candidate.log_latency is None
    assert m.champion.latency_ms is not None
    assert not any("quantile" in q and "00002" in q for q in prometheus.queries)  # not even asked


def broken(kind: str, arm: str, window: str) -> Any:
    return (400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"})


@pytest.mark.parametrize("prometheus", [broken], indirect=True)
def test_a_failing_query_is_a_problem_of_the_checks_it_feeds(prometheus: FakePrometheus) -> None:
    m = measure(prometheus)
    assert set(m.problems) == {"error_rate", "error_burst", "latency", "latency_p95"}
    assert "bad_data" in m.problems["error_rate"]
    checks = {c.name: c for c in evaluate_checks(RolloutPolicy(), m)}
    assert checks["error_rate"].verdict == "error"


def test_an_unreachable_prometheus_is_a_problem_not_a_crash() -> None:
    settings = PrometheusSettings(url="http://127.0.0.1:9", timeout_s=0.5)
    m = PrometheusMetricsSource(settings, namespace="models", workloads=Serving()).measure(
        RELEASE, window_start=NOW - timedelta(minutes=5), now=NOW
    )
    assert "unreachable" in m.problems["error_rate"]


def test_histogram_helpers() -> None:
    h = Histogram(((10.0, 50.0), (20.0, 90.0), (math.inf, 100.0)))
    assert h.count == 100
    assert h.above(15.0) == pytest.approx(40 * 0.5 + 10)
    summary = h.log_summary()
    assert summary is not None
    assert summary.n == 100
    assert Histogram(((math.inf, 1.0),)).log_summary() is None


def test_each_check_takes_its_numbers_from_its_source(prometheus: FakePrometheus) -> None:
    def store_like(release: ReleaseState, window_start: datetime, now: datetime) -> Measurements:
        return Measurements(
            start=release.started_at,
            end=now,
            window_start=window_start,
            champion=steady_arm(500, 0.0),
            candidate=steady_arm(100, 0.0),
            problems={"accuracy": "no labels yet", "error_rate": "the log only sees 200s"},
        )

    combined = CombinedMetricsSource(
        {"store": ScriptedMetrics(store_like), "prometheus": source(prometheus)},
        {
            "error_rate": "prometheus",
            "error_burst": "prometheus",
            "latency": "prometheus",
            "latency_p95": "prometheus",
        },
        default="store",
    )
    m = combined.measure(RELEASE, window_start=NOW - timedelta(minutes=5), now=NOW)
    assert (m.candidate.requests, m.candidate.errors) == (202, 10)  # Prometheus
    assert m.candidate.positives == steady_arm(100, 0.0).positives  # the log
    assert m.problems == {"accuracy": "no labels yet"}  # the log's error_rate problem is not ours
    with pytest.raises(ValueError, match="share the arm's requests"):
        CombinedMetricsSource(
            {"store": ScriptedMetrics(store_like), "prometheus": source(prometheus)},
            {"error_rate": "prometheus"},
            default="store",
        )


def dead_candidate(kind: str, arm: str, window: str) -> Any:
    """The candidate's pods crash-loop: its sidecar reports nothing, the gateway answers 503 UH/UF."""
    if arm == "candidate":
        if kind == "proxy":
            return vector(({}, 60 if window == "3600s" else 6))
        return []
    return healthy(kind, arm, window)


@pytest.mark.parametrize("prometheus", [dead_candidate], indirect=True)
def test_errors_the_proxy_answered_count_for_the_arm_they_were_routed_to(prometheus: FakePrometheus) -> None:
    m = measure(prometheus)
    assert (m.candidate.requests, m.candidate.proxy_errors, m.candidate.window_proxy_errors) == (0, 60, 6)
    assert (m.candidate.routed, m.candidate.failed, m.candidate.error_rate) == (60, 60, 1.0)
    assert m.champion.proxy_errors == 0
    proxy = [q for q in prometheus.queries if 'reporter="source"' in q]
    assert any('destination_service_name=~"fraud\\-predictor\\-00002"' in q for q in proxy)
    assert all('response_flags=~"UH|UF|UC|UT|URX"' in q for q in proxy)
    checks = {c.name: c for c in evaluate_checks(RolloutPolicy(), m)}
    assert checks["error_rate"].verdict == "fail", checks["error_rate"].reason
    assert "60 candidate" in (checks["error_rate"].reason or "")
