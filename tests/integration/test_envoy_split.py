"""The real Envoy front door between two tiny in-process upstreams: split, live flips, forcing, ids.

Every socket is on 127.0.0.1 with ports chosen by the kernel, so a running local stack on
8080/9901 is never touched.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcanary.runtime import processes
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, REQUEST_ID_HEADER, ROUTES_VERSION_HEADER
from mlcanary.serving.local.envoy import (
    PROCESS_NAME,
    AlreadyRunningError,
    AppliedChange,
    EnvoyLayout,
    EnvoyProxy,
    Upstream,
    Weights,
    WeightsRejectedError,
    load_persisted_weights,
    write_routes,
)
from mlcanary.serving.local.envoy_config import render_routes

pytestmark = pytest.mark.integration


# -- upstreams -----------------------------------------------------------------------------------


class _ArmHandler(BaseHTTPRequestHandler):
    """Answers every request with its arm name and the request id it received."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a model server would
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    server: _ArmServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/slow"):
            time.sleep(0.05)
        body = json.dumps(
            {"arm": self.server.arm, "request_id": self.headers.get(REQUEST_ID_HEADER), "path": self.path}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer  # noqa: N815
    do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ArmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, arm: str) -> None:
        super().__init__(("127.0.0.1", 0), _ArmHandler)
        self.arm = arm

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, _ArmServer]]:
    servers = {arm: _ArmServer(arm) for arm in ("champion", "candidate")}
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}) for s in servers.values()
    ]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)


def _layout(state_dir: Path, upstreams: dict[str, _ArmServer]) -> EnvoyLayout:
    return EnvoyLayout(
        state_dir=state_dir,
        listener_port=0,
        admin_port=0,
        champion=Upstream(port=upstreams["champion"].port),
        candidate=Upstream(port=upstreams["candidate"].port),
    )


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, _ArmServer]) -> Iterator[EnvoyProxy]:
    proxy = EnvoyProxy(
        _layout(tmp_path_factory.mktemp("state"), upstreams),
        initial_weights=Weights.canary(20),
        concurrency=2,
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _client() -> httpx.Client:
    return httpx.Client(timeout=10.0, trust_env=False)


# -- split ---------------------------------------------------------------------------------------


def _count_arms(url: str, n: int, threads: int = 4) -> dict[str, int]:
    counts = {"champion": 0, "candidate": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        local = {"champion": 0, "candidate": 0}
        try:
            with _client() as client:
                for _ in range(k):
                    response = client.get(url + "/v1/models/m:predict")
                    assert response.status_code == 200, response.text
                    served = response.headers[ARM_SERVED_HEADER]
                    assert response.json()["arm"] == served
                    local[served] += 1
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
        with lock:
            for arm, value in local.items():
                counts[arm] += value

    pool = [threading.Thread(target=worker, args=(n // threads,)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    assert not errors, errors
    return counts


def test_candidate_share_matches_weight_within_binomial_tolerance(envoy: EnvoyProxy) -> None:
    envoy.set_weights(Weights.canary(20))
    n, p = 2000, 0.2
    counts = _count_arms(envoy.url, n)
    assert counts["champion"] + counts["candidate"] == n
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(counts["candidate"] - n * p) <= 4 * sigma, counts


def test_stats_count_requests_per_arm(envoy: EnvoyProxy) -> None:
    envoy.set_weights(Weights(50, 50))
    before = envoy.stats()
    counts = _count_arms(envoy.url, 100, threads=1)
    after = envoy.stats()
    for arm in ("champion", "candidate"):
        assert after.arm(arm).rq_2xx - before.arm(arm).rq_2xx == counts[arm]
        assert after.arm(arm).rq_5xx == before.arm(arm).rq_5xx
    assert (after.rds_update_rejected, after.rds_update_failure) == (
        before.rds_update_rejected,
        before.rds_update_failure,
    )
    assert after.rds_update_success >= 2


# -- live flips ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    sent: float
    status: int
    arm: str
    version: str


def _traffic(
    url: str, path: str, stop: threading.Event, out: list[_Sample], errors: list[BaseException]
) -> None:
    deadline = time.monotonic() + 20  # bounded even if the test body never sets `stop`
    with _client() as client:
        for _ in range(50_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            sent = time.perf_counter()
            try:
                response = client.get(url + path)
            except httpx.HTTPError as exc:
                errors.append(exc)
                continue
            out.append(
                _Sample(
                    sent=sent,
                    status=response.status_code,
                    arm=response.headers.get(ARM_SERVED_HEADER, ""),
                    version=response.headers.get(ROUTES_VERSION_HEADER, ""),
                )
            )


def test_weight_flips_under_traffic_fail_no_request(
    envoy: EnvoyProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    envoy.set_weights(Weights(80, 20))
    stop = threading.Event()
    samples: list[list[_Sample]] = [[], [], []]
    errors: list[BaseException] = []
    # Two fast keep-alive clients plus one whose requests are in flight for 50 ms at each flip.
    clients = [
        threading.Thread(target=_traffic, args=(envoy.url, path, stop, samples[i], errors))
        for i, path in enumerate(["/fast", "/fast", "/slow"])
    ]
    for thread in clients:
        thread.start()
    flips: list[tuple[float, float, AppliedChange]] = []
    try:
        time.sleep(0.3)
        for weights in [Weights(80, 20), Weights(50, 50), Weights(0, 100), Weights(100, 0), Weights(80, 20)]:
            begun = time.perf_counter()
            change = envoy.set_weights(weights)
            confirmed = time.perf_counter()
            assert envoy.observed_weights() == weights
            flips.append((begun, confirmed, change))
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in clients)

    everything = [s for per_client in samples for s in per_client]
    assert not errors, errors[:3]
    assert len(everything) > 200
    assert [s.status for s in everything if s.status != 200] == []

    for i, (_, confirmed, change) in enumerate(flips):
        window_end = flips[i + 1][0] if i + 1 < len(flips) else math.inf
        after = [s for s in everything if confirmed < s.sent < window_end]
        assert after, f"no traffic after flip to {change.weights}"
        assert {s.version for s in after} == {change.version}
        if change.weights == Weights(0, 100):
            assert {s.arm for s in after} == {"candidate"}
        if change.weights == Weights(100, 0):
            assert {s.arm for s in after} == {"champion"}

    with capsys.disabled():
        applied = ", ".join(
            f"{c.weights.champion}/{c.weights.candidate}: {c.apply_ms:.2f} ms" for _, _, c in flips
        )
        totals = ", ".join(f"{c.total_ms:.1f}" for _, _, c in flips)
        print(
            f"\n[envoy] {len(everything)} requests, 0 failed; apply latency (rename -> confirmed) {applied}"
        )
        print(f"[envoy] set_weights total ms (validate, write, fsync, confirm): {totals}")


# -- forcing, request ids, refusal -------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "forced"), [(Weights(100, 0), "candidate"), (Weights(0, 100), "champion")]
)
def test_arm_header_forces_an_arm_regardless_of_weights(
    envoy: EnvoyProxy, weights: Weights, forced: str
) -> None:
    envoy.set_weights(weights)
    with _client() as client:
        for _ in range(50):
            response = client.get(envoy.url + "/v1/models/m:predict", headers={ARM_HEADER: forced})
            assert response.status_code == 200
            assert response.json()["arm"] == forced
            assert response.headers[ARM_SERVED_HEADER] == forced
        # An unknown value is not a forcing header: the weights decide.
        other = "champion" if forced == "candidate" else "candidate"
        response = client.get(envoy.url + "/", headers={ARM_HEADER: "nobody"})
        assert response.json()["arm"] == other


def test_client_request_id_reaches_upstream_and_access_log(envoy: EnvoyProxy) -> None:
    envoy.set_weights(Weights(80, 20))
    request_id = f"test-{uuid.uuid4()}"
    with _client() as client:
        response = client.post(
            envoy.url + "/v1/models/m:predict", json={}, headers={REQUEST_ID_HEADER: request_id}
        )
        generated = client.get(envoy.url + "/")
    assert response.status_code == 200
    assert response.json()["request_id"] == request_id
    assert response.headers[REQUEST_ID_HEADER] == request_id
    # Without a client id Envoy makes one and still hands it to the upstream and the client.
    assert generated.json()["request_id"] == generated.headers[REQUEST_ID_HEADER] != ""

    log_path = envoy.layout.access_log_path
    entry = None
    deadline = time.monotonic() + 5  # access log flush interval is 250 ms
    while entry is None and time.monotonic() < deadline:
        if log_path.exists():
            for line in log_path.read_text().splitlines():
                record = json.loads(line)
                if record.get("request_id") == request_id:
                    entry = record
        if entry is None:
            time.sleep(0.05)
    assert entry is not None, f"{request_id} not in {log_path}"
    served = response.headers[ARM_SERVED_HEADER]
    assert entry["upstream_cluster"] == served
    assert entry["arm_served"] == served
    assert entry["response_code"] == 200
    assert entry["method"] == "POST"
    assert entry["route_name"] == "weighted_split"
    assert entry["routes_version"] == response.headers[ROUTES_VERSION_HEADER]


def _fingerprint(layout: EnvoyLayout) -> tuple[bytes, int, bytes]:
    return (
        layout.routes_path.read_bytes(),
        os.stat(layout.routes_path).st_ino,
        layout.weights_path.read_bytes(),
    )


def test_invalid_weights_are_refused_before_writing_and_old_weights_keep_serving(envoy: EnvoyProxy) -> None:
    envoy.set_weights(Weights(100, 0))
    layout = envoy.layout
    before = _fingerprint(layout)
    stats_before = envoy.stats()
    with pytest.raises(ValueError, match="at least one must be positive"):
        Weights(0, 0)
    forged = object.__new__(Weights)  # what a caller that bypassed the constructor would pass
    object.__setattr__(forged, "champion", 0)
    object.__setattr__(forged, "candidate", 0)
    with pytest.raises(ValueError, match="at least one must be positive"):
        envoy.set_weights(forged)
    assert _fingerprint(layout) == before
    assert envoy.observed_weights() == Weights(100, 0)
    with _client() as client:
        assert {client.get(envoy.url + "/").json()["arm"] for _ in range(20)} == {"champion"}
    stats = envoy.stats()
    assert stats.rds_update_success == stats_before.rds_update_success  # nothing reached Envoy
    assert stats.rds_update_rejected == stats_before.rds_update_rejected


def test_routes_envoy_rejects_raise_and_the_files_are_put_back(
    envoy: EnvoyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    envoy.set_weights(Weights(60, 40))
    calls = 0

    def misspelt_once(weights: Weights, version: str, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        doc = render_routes(weights, version, **kwargs)
        if calls == 1:  # a cluster Envoy does not know: validate_clusters makes it reject the file
            doc["resources"][0]["virtual_hosts"][0]["routes"][2]["route"]["weighted_clusters"]["clusters"][1][
                "name"
            ] = "candidat"
        return doc

    monkeypatch.setattr("mlcanary.serving.local.envoy.render_routes", misspelt_once)
    rejected_before = envoy.stats().rds_update_rejected
    with pytest.raises(WeightsRejectedError, match="rejected"):
        envoy.set_weights(Weights(10, 90))
    assert envoy.stats().rds_update_rejected > rejected_before
    assert envoy.observed_weights() == Weights(60, 40)
    monkeypatch.undo()
    # The files were put back to what Envoy serves, so a restart would not resurrect the bad change.
    assert load_persisted_weights(envoy.layout) == Weights(60, 40)
    assert envoy.set_weights(Weights(80, 20)).previous == Weights(60, 40)


# -- lifecycle -----------------------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restart_boots_with_persisted_weights_and_down_stops_it_from_the_pidfile(
    tmp_path: Path, upstreams: dict[str, _ArmServer]
) -> None:
    layout = _layout(tmp_path, upstreams)
    write_routes(layout, Weights(30, 70), "left-by-last-run")
    first = EnvoyProxy(layout, concurrency=1)
    first.start()
    try:
        assert first.observed_weights() == Weights(30, 70)
        record = processes.read_pidfile(layout.state_dir, PROCESS_NAME)
        assert record is not None
        assert _group_alive(record.pgid)
        with pytest.raises(AlreadyRunningError):
            EnvoyProxy(layout).start()
        # Another process (`mlcanary down`) knows only the layout; the pidfile leads it to Envoy.
        other = EnvoyProxy(layout)
        assert other.running()
        assert other.observed_weights() == Weights(30, 70)
        other.stop()
        deadline = time.monotonic() + 5
        while _group_alive(record.pgid) and time.monotonic() < deadline:
            first.running()  # reaps our child so the group disappears
            time.sleep(0.02)
        assert not _group_alive(record.pgid)
        assert not processes.pidfile_path(layout.state_dir, PROCESS_NAME).exists()
        assert not first.running()
    finally:
        first.stop()


def test_stale_pidfile_is_detected_removed_and_never_signalled(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    path = processes.pidfile_path(tmp_path, "thing")
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "name": "thing",
                "pid": dead.pid,
                "pgid": dead.pid,
                "argv": ["x"],
                "log_path": str(tmp_path / "x.log"),
                "started_at": 0.0,
                "start_ticks": 1,
            }
        )
    )
    assert processes.find_running(tmp_path, "thing") is None
    assert not path.exists()
    # Our own live pid with the wrong start time: a reused pid, not our process.
    path.write_text(
        json.dumps(
            {
                "name": "thing",
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "argv": ["x"],
                "log_path": "x",
                "started_at": 0.0,
                "start_ticks": -1,
            }
        )
    )
    assert processes.stop_by_pidfile(tmp_path, "thing") is False
    assert not path.exists()


def test_process_helper_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)"
    )
    proc = processes.start_process(
        "stubborn", [sys.executable, "-c", stubborn], state_dir=tmp_path, log_path=tmp_path / "stubborn.log"
    )
    try:
        deadline = time.monotonic() + 10
        while "up" not in proc.log_tail() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        proc.stop(grace_s=0.3)
        assert time.monotonic() - started < 5
        assert proc.returncode() == -signal.SIGKILL
        assert not processes.pidfile_path(tmp_path, "stubborn").exists()
    finally:
        proc.stop(grace_s=0)
