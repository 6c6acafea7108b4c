"""``mlcanary traffic``: pacing, per-arm accounting, errors, delayed feedback and determinism.

The main scenario runs against a real HTTP server on 127.0.0.1 (a Starlette fake of the front door
and the collector under uvicorn in a thread); row-content checks use ``httpx.MockTransport``, where
a socket adds nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlcanary.data.schema import infer_schema
from mlcanary.data.synthetic import FEATURES, TARGET, DriftKnobs, generate_transactions
from mlcanary.demo.traffic.plan import CHUNK_ROWS, TrafficPlan, chunk_seed
from mlcanary.demo.traffic.render import render_summary
from mlcanary.demo.traffic.report import Progress, TrafficReport
from mlcanary.demo.traffic.run import run_traffic, run_traffic_sync
from mlcanary.serving.local.inference_protocol import parse_v1_request
from mlcanary.telemetry.collector import create_collector_app
from mlcanary.telemetry.store import InferenceLogStore

SERVED = "x-mlcanary-arm-served"
# Where the mock transports answer (nothing listens: the transport never opens a socket).
DOOR = "http://front-door.test"


@dataclass
class Recorded:
    """What the fake front door and collector saw."""

    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    arms: dict[str, str] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    status_by_id: dict[str, int] = field(default_factory=dict)
    forced: list[str | None] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    feedback_posts: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def fake_stack(recorded: Recorded, *, error_rate: float = 0.05, seed: int = 7) -> Starlette:
    """Answers like Envoy in front of two V1 model servers (80/20, some 503s) plus ``/feedback``.

    The model name ``slow`` sleeps 1 s before answering, for timeouts and shedding.
    """
    rng = random.Random(seed)

    async def predict(request: Request) -> Response:
        with recorded.lock:
            recorded.in_flight += 1
            recorded.max_in_flight = max(recorded.max_in_flight, recorded.in_flight)
        try:
            if request.path_params["name"] == "slow":
                await asyncio.sleep(1.0)
            body = json.loads(await request.body())
            request_id = request.headers["x-request-id"]
            forced = request.headers.get("x-mlcanary-arm")
            arm = forced or ("candidate" if rng.random() < 0.2 else "champion")
            status = 503 if rng.random() < error_rate else 200
            with recorded.lock:
                assert request_id not in recorded.predictions, "request id reused"
                recorded.predictions[request_id] = body["instances"][0]
                recorded.arms[request_id] = arm
                recorded.statuses[status] += 1
                recorded.status_by_id[request_id] = status
                recorded.forced.append(forced)
            if status == 503:
                return JSONResponse({"error": "upstream unavailable"}, 503, headers={SERVED: arm})
            amount = body["instances"][0]["amount"]
            probability = min(amount / 1000.0, 1.0)
            payload = {
                "predictions": [int(probability >= 0.5)],
                "probabilities": [probability],
                "model_name": request.path_params["name"],
                "model_version": "1" if arm == "champion" else "2",
                "arm": arm,
            }
            return JSONResponse(payload, headers={SERVED: arm, "x-request-id": request_id})
        finally:
            with recorded.lock:
                recorded.in_flight -= 1

    async def feedback(request: Request) -> Response:
        items = json.loads(await request.body())
        assert isinstance(items, list)
        with recorded.lock:
            recorded.feedback.extend(items)
            recorded.feedback_posts += 1
        return JSONResponse({"recorded": len(items)})

    return Starlette(
        routes=[
            Route("/v1/models/{name}:predict", predict, methods=["POST"]),
            Route("/feedback", feedback, methods=["POST"]),
        ]
    )


class ServerThread:
    """A uvicorn server on a free 127.0.0.1 port in a daemon thread."""

    def __init__(self, app: Starlette) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "fake server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def expected_rows(seed: int, n: int, knobs: DriftKnobs | None = None) -> list[dict[str, Any]]:
    """Rows 0..n-1 of a plan, rebuilt straight from the generator per the chunking contract."""
    rows: list[dict[str, Any]] = []
    for chunk in range((n + CHUNK_ROWS - 1) // CHUNK_ROWS):
        frame = generate_transactions(CHUNK_ROWS, seed=chunk_seed(seed, chunk), knobs=knobs)
        rows.extend(frame[[*FEATURES, TARGET]].to_dict(orient="records"))
    return rows[:n]


def row_index(request_id: str, run_id: str) -> int:
    prefix, _, index = request_id.rpartition("-")
    assert prefix == run_id
    return int(index)


@dataclass
class Scenario:
    plan: TrafficPlan
    report: TrafficReport
    recorded: Recorded
    progress: list[Progress]
    wall_s: float


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    """200 rps for 1 s through the fake front door, half the labels posted 0.3 s later."""
    recorded = Recorded()
    with ServerThread(fake_stack(recorded)) as server:
        plan = TrafficPlan(
            front_door_url=server.url,
            collector_url=server.url,
            model="fraud-detector",
            rps=200,
            duration_s=1.0,
            seed=11,
            feedback_delay_s=0.3,
            feedback_share=0.5,
        )
        progress: list[Progress] = []
        started = time.monotonic()
        report = run_traffic_sync(plan, on_progress=progress.append)
        yield Scenario(plan, report, recorded, progress, time.monotonic() - started)


def test_sends_rps_times_duration_open_loop(scenario: Scenario) -> None:
    report, recorded = scenario.report, scenario.recorded
    assert report.planned == 200
    assert report.sent + report.shed == 200
    # A fast local server rarely fills 32 slots at 200 rps; what an overloaded machine makes it shed
    # is counted (how fast it goes is the benchmarks' subject, not this test's).
    assert report.sent >= 100
    assert len(recorded.predictions) == report.sent
    assert 0 < report.achieved_rps <= 200 * 1.1  # paced: never faster than planned
    assert report.duration_s > 0.9  # paced over the planned second, not sent in a burst


def test_per_arm_counts_match_what_the_server_served(scenario: Scenario) -> None:
    report, recorded = scenario.report, scenario.recorded
    assert set(report.arms) == {"champion", "candidate"}  # no unknown bucket without transport errors
    assert sum(arm.requests for arm in report.arms.values()) == report.total.requests == report.sent
    served = Counter(recorded.arms.values())
    assert report.arms["champion"].requests == served["champion"]
    assert report.arms["candidate"].requests == served["candidate"]
    share = report.share("candidate")
    assert share is not None
    assert 0.08 < share < 0.35  # 20 % +- > 4 binomial standard deviations for 200 requests


def test_503s_are_server_errors(scenario: Scenario) -> None:
    report, recorded = scenario.report, scenario.recorded
    assert recorded.statuses[503] > 0
    assert report.total.server_errors_5xx == recorded.statuses[503]
    assert report.total.ok == recorded.statuses[200]
    assert report.total.transport_errors == 0
    assert report.total.status_codes == dict(sorted(recorded.statuses.items()))
    for arm in report.arms.values():
        assert arm.ok + arm.server_errors_5xx == arm.requests


def test_latency_and_prediction_summaries(scenario: Scenario) -> None:
    total = scenario.report.total
    assert total.latency_p50_ms is not None
    assert total.latency_p99_ms is not None
    assert 0 < total.latency_p50_ms <= total.latency_p99_ms < 5000
    assert total.positive_rate is not None
    assert 0 <= total.positive_rate <= 1
    assert total.mean_probability is not None
    assert 0 < total.mean_probability < 1
    assert total.malformed_responses == 0


def test_feedback_carries_the_true_label_once_per_answered_request(scenario: Scenario) -> None:
    report, recorded = scenario.report, scenario.recorded
    rows = expected_rows(scenario.plan.seed, report.planned)
    ids = [item["request_id"] for item in recorded.feedback]
    assert len(ids) == len(set(ids)), "a request got more than one label"
    assert report.feedback_sent == len(ids)
    assert report.feedback_failed == report.feedback_dropped == 0
    for item in recorded.feedback:
        rid = item["request_id"]
        index = row_index(rid, report.run_id)
        assert item["label"] == rows[index][TARGET]
    # Labels are batched: far fewer posts than labels.
    assert recorded.feedback_posts < len(ids)


def test_feedback_only_for_2xx_and_share_respected(scenario: Scenario) -> None:
    recorded = scenario.recorded
    ok_ids = {rid for rid, status in recorded.status_by_id.items() if status == 200}
    labelled = {item["request_id"] for item in recorded.feedback}
    assert labelled <= ok_ids
    assert len(labelled) / len(ok_ids) == pytest.approx(0.5, abs=0.15)


def test_sent_rows_are_the_generators_rows(scenario: Scenario) -> None:
    report, recorded = scenario.report, scenario.recorded
    rows = expected_rows(scenario.plan.seed, report.planned)
    for rid, instance in recorded.predictions.items():
        expected = rows[row_index(rid, report.run_id)]
        assert instance == {name: expected[name] for name in FEATURES}


def test_progress_is_monotone_and_ends_complete(scenario: Scenario) -> None:
    progress = scenario.progress
    assert len(progress) >= 3
    done = [p.done for p in progress]
    assert done == sorted(done)
    last = progress[-1]
    assert last.done == last.total == 200
    assert sum(last.per_arm.values()) == last.sent
    assert last.errors == scenario.report.total.server_errors_5xx
    assert last.feedback_sent == scenario.report.feedback_sent


def test_summary_table_has_a_row_per_arm_and_a_total(scenario: Scenario) -> None:
    table = render_summary(scenario.report)
    assert [column.header for column in table.columns][:6] == ["arm", "requests", "share", "ok", "4xx", "5xx"]
    assert list(table.columns[0].cells) == ["champion", "candidate", "total"]
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert f"{scenario.report.sent}/200 sent" in text
    assert f"feedback sent {scenario.report.feedback_sent}" in text
    json.dumps(scenario.report.to_dict())


def test_connection_refused_is_counted_not_raised() -> None:
    url = closed_port_url()
    plan = TrafficPlan(front_door_url=url, collector_url=url, rps=500, total_requests=20, timeout_s=2.0)
    report = run_traffic_sync(plan)
    assert report.sent == 20
    assert set(report.arms) == {"champion", "candidate", "unknown"}
    assert report.arms["unknown"].transport_errors == 20
    assert report.arms["champion"].requests == report.arms["candidate"].requests == 0
    assert report.errors == {"ConnectError": 20}
    assert report.total.latency_p50_ms is None
    assert report.share("candidate") is None
    assert report.feedback_sent == 0  # nothing answered, so nothing to label
    render_summary(report)


def test_timeouts_are_transport_errors_and_the_limit_sheds_load() -> None:
    recorded = Recorded()
    with ServerThread(fake_stack(recorded, error_rate=0.0)) as server:
        plan = TrafficPlan(
            front_door_url=server.url,
            collector_url=None,
            model="slow",
            rps=200,
            total_requests=40,
            concurrency=4,
            timeout_s=0.3,
        )
        report = run_traffic_sync(plan)
    assert recorded.max_in_flight <= 4
    assert report.shed > 0
    assert report.sent + report.shed == 40
    assert report.arms["unknown"].transport_errors == report.sent
    assert report.errors == {"ReadTimeout": report.sent}


def mock_client(seen: list[tuple[str, dict[str, Any]]], headers: list[httpx.Headers]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.headers["x-request-id"], body["instances"][0]))
        headers.append(request.headers)
        return httpx.Response(200, json={"predictions": [0], "probabilities": [0.1]})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def sent_rows(plan: TrafficPlan) -> tuple[TrafficReport, list[dict[str, Any]], list[httpx.Headers]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    headers: list[httpx.Headers] = []

    async def go() -> TrafficReport:
        async with mock_client(seen, headers) as client:
            return await run_traffic(plan, client=client)

    report = asyncio.run(go())
    by_index = sorted(seen, key=lambda pair: row_index(pair[0], report.run_id))
    return report, [row for _, row in by_index], headers


def fast_plan(**overrides: Any) -> TrafficPlan:
    """A plan at the top rate with no feedback, for row-content checks over the mock transport."""
    return TrafficPlan(**{"front_door_url": DOOR, "rps": 5000, **overrides})


def test_same_seed_same_rows_across_chunks() -> None:
    n = CHUNK_ROWS + 150
    report_a, rows_a, _ = sent_rows(fast_plan(total_requests=n, seed=3))
    report_b, rows_b, _ = sent_rows(fast_plan(total_requests=n, seed=3))
    _, rows_c, _ = sent_rows(fast_plan(total_requests=50, seed=4))
    assert report_a.sent == report_b.sent == n
    assert report_a.run_id != report_b.run_id
    assert rows_a == rows_b
    expected = expected_rows(3, n)
    assert rows_a == [{name: row[name] for name in FEATURES} for row in expected]
    assert rows_c != rows_a[:50]


def test_covariate_shift_changes_the_rows_sent() -> None:
    _, base, _ = sent_rows(fast_plan(total_requests=400, seed=5))
    _, shifted, _ = sent_rows(fast_plan(total_requests=400, seed=5, covariate_shift=2.0))
    mean = lambda rows, key: sum(row[key] for row in rows) / len(rows)  # noqa: E731
    assert mean(shifted, "amount") > 1.5 * mean(base, "amount")
    assert mean(shifted, "distance_from_home_km") > mean(base, "distance_from_home_km")


def test_forced_arm_header_and_unique_request_ids() -> None:
    report, _, headers = sent_rows(fast_plan(total_requests=30, force_arm="candidate"))
    assert {h.get("x-mlcanary-arm") for h in headers} == {"candidate"}
    assert len({h["x-request-id"] for h in headers}) == 30
    # The mock names no arm: without the Envoy header or an "arm" field the requests are unknown.
    assert report.arms["unknown"].requests == 30
    assert report.arms["unknown"].ok == 30


def test_feedback_share_extremes_and_no_collector() -> None:
    posted: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/feedback":
            posted.extend(json.loads(request.content))
            return httpx.Response(200, json={"recorded": 1})
        return httpx.Response(200, json={"predictions": [1], "probabilities": [0.9], "arm": "champion"})

    def run(**kwargs: Any) -> TrafficReport:
        posted.clear()
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        plan = TrafficPlan(
            front_door_url=DOOR,
            rps=5000,
            total_requests=100,
            feedback_delay_s=0.0,
            **{"collector_url": DOOR, **kwargs},
        )
        return run_traffic_sync(plan, client=client)

    everything = run(feedback_share=1.0)
    assert everything.feedback_sent == len(posted) == 100
    assert everything.arms["champion"].requests == 100  # arm taken from the body without the header
    assert run(feedback_share=0.0).feedback_sent == len(posted) == 0
    assert run(collector_url=None, feedback_share=1.0).feedback_sent == len(posted) == 0


class _SplitTransport(httpx.AsyncBaseTransport):
    """``/feedback`` to the real collector app in-process, everything else to a canned answer."""

    def __init__(self, collector: Starlette) -> None:
        self.collector = httpx.ASGITransport(app=collector)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/feedback":
            return await self.collector.handle_async_request(request)
        return httpx.Response(200, json={"predictions": [0], "probabilities": [0.2], "arm": "candidate"})


def test_the_real_collector_accepts_the_feedback(tmp_path: Path) -> None:
    with InferenceLogStore(f"sqlite:///{tmp_path / 'inference.db'}") as store:
        app = create_collector_app(store)
        client = httpx.AsyncClient(transport=_SplitTransport(app))
        plan = TrafficPlan(
            front_door_url=DOOR,
            collector_url=DOOR,
            rps=5000,
            total_requests=120,
            feedback_share=1.0,
            feedback_delay_s=0.0,
        )
        report = run_traffic_sync(plan, client=client)
        assert report.feedback_sent == 120
        assert report.feedback_failed == 0
        assert app.state.stats.feedback_recorded == 120


def test_sent_bodies_pass_the_model_servers_strict_v1_parser() -> None:
    _, rows, _ = sent_rows(fast_plan(total_requests=300, seed=9, covariate_shift=2.0, noise=0.2))
    specs = infer_schema(generate_transactions(200, seed=0), FEATURES)
    frame = parse_v1_request(json.loads(json.dumps({"instances": rows})), specs, max_instances=len(rows))
    assert len(frame) == 300


def test_unavailable_collector_gets_one_retry() -> None:
    feedback_calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/feedback":
            feedback_calls.append(len(json.loads(request.content)))
            if len(feedback_calls) == 1:
                return httpx.Response(503, json={"error": "retry later"}, headers={"Retry-After": "1"})
            return httpx.Response(200, json={"recorded": feedback_calls[-1]})
        return httpx.Response(200, json={"predictions": [0], "probabilities": [0.2]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    plan = TrafficPlan(
        front_door_url=DOOR,
        collector_url=DOOR,
        rps=5000,
        total_requests=40,
        feedback_share=1.0,
        feedback_delay_s=0.0,
    )
    report = run_traffic_sync(plan, client=client)
    assert report.feedback_sent == 40
    assert report.feedback_failed == report.feedback_dropped == 0
    assert report.feedback_errors == {"HTTP 503": 1}
    assert sum(feedback_calls) == 40 + feedback_calls[0]


def test_refused_feedback_is_counted_as_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/feedback":
            return httpx.Response(400, json={"error": "invalid feedback"})
        return httpx.Response(200, json={"predictions": [0], "probabilities": [0.2]})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    plan = TrafficPlan(
        front_door_url=DOOR,
        collector_url=DOOR,
        rps=5000,
        total_requests=50,
        feedback_share=1.0,
        feedback_delay_s=0.0,
    )
    report = run_traffic_sync(plan, client=client)
    assert report.feedback_sent == 0
    assert report.feedback_failed == 50
    assert report.feedback_errors == {"HTTP 400": 1}


def test_a_failing_progress_callback_stops_the_run() -> None:
    calls: list[Progress] = []

    def explode(progress: Progress) -> None:
        calls.append(progress)
        raise RuntimeError("display broke")

    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json={"predictions": [0]}))
    )
    with pytest.raises(RuntimeError, match="display broke"):
        run_traffic_sync(fast_plan(rps=500, total_requests=2000), on_progress=explode, client=client)
    assert len(calls) == 1
    assert calls[0].done < 2000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rps": 0, "duration_s": 1}, "rps"),
        ({"rps": 5001, "duration_s": 1}, "rps"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": -1}, "duration_s"),
        ({}, "exactly one of duration_s or total_requests"),
        ({"duration_s": 1, "total_requests": 10}, "exactly one of duration_s or total_requests"),
        ({"total_requests": 0}, "total_requests"),
        ({"rps": 5000, "duration_s": 3600}, "the limit is"),
        ({"total_requests": 1, "feedback_share": 1.5}, "feedback_share"),
        ({"total_requests": 1, "feedback_delay_s": -1}, "feedback_delay_s"),
        ({"total_requests": 1, "concurrency": 0}, "concurrency"),
        ({"total_requests": 1, "timeout_s": 0}, "timeout_s"),
        ({"total_requests": 1, "covariate_shift": 6}, "covariate_shift"),
        ({"total_requests": 1, "fraud_rate": 0}, "fraud_rate"),
        ({"total_requests": 1, "noise": 0.9}, "noise"),
        ({"total_requests": 1, "seed": -1}, "seed"),
        ({"total_requests": 1, "force_arm": "canary"}, "force_arm"),
        ({"total_requests": 1, "front_door_url": "localhost:8080"}, "front_door_url must be an http(s) URL"),
        ({"total_requests": 1, "collector_url": "ftp://127.0.0.1"}, "collector_url must be an http(s) URL"),
        ({"total_requests": 1, "model": "a/b"}, "model must be a bare model name"),
        ({"total_requests": 1, "model": ""}, "model"),
        ({"total_requests": 1, "rsp": 3}, "rsp"),
    ],
)
def test_invalid_plans_are_rejected_with_the_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        TrafficPlan(**{"front_door_url": DOOR, **overrides})


def test_plan_is_frozen_and_derives_counts_and_urls() -> None:
    plan = TrafficPlan(front_door_url="http://127.0.0.1:8080/", rps=0.5, duration_s=1, model="fraud detector")
    assert plan.planned_requests == 1
    assert plan.predict_url == "http://127.0.0.1:8080/v1/models/fraud%20detector:predict"
    assert plan.knobs == DriftKnobs()
    assert TrafficPlan(front_door_url=DOOR, rps=200, duration_s=1.5).planned_requests == 300
    assert plan.collector_url is None  # no labels unless a collector is named
    with pytest.raises(ValidationError):
        plan.rps = 10  # type: ignore[misc]
    assert issubclass(ValidationError, ValueError)
