"""The local stack end to end: real Envoy, real model servers loading from MLflow, real collector.

One stack per module (``up`` once, ~20 s on 2 cores); each test first asks ``deploy`` for the state
it needs, which is a no-op when the state is already there, so tests also pass one at a time.
Every port is chosen free on 127.0.0.1.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from stack_helpers import (
    LocalStack,
    count_by,
    local_stack,
    pid_alive,
    recorded_pids,
    stack_settings,
)

from mlcanary.rollout.measurements import ProxyErrorCount
from mlcanary.rollout.serving import ServingError
from mlcanary.runtime.processes import RUN_DIRNAME
from mlcanary.serving.local.envoy import EnvoyProxy, Weights
from mlcanary.serving.local.proxy_errors import EnvoyProxyErrors
from mlcanary.serving.local.stack import StackError, down, stack_status, up
from mlcanary.testing.ports import free_ports

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_state: Path) -> Iterator[LocalStack]:
    settings = stack_settings(tmp_path_factory.mktemp("local-stack"), mlflow_dir=mlflow_state)
    with local_stack(settings, candidate_percent=20) as running:
        yield running


def _versions(stack: LocalStack) -> tuple[str, str]:
    assert stack.candidate_version is not None
    return stack.champion_version, stack.candidate_version


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- refusals (nothing is started) ---------------------------------------------------------------


def test_up_refuses_without_a_champion(tmp_path: Path, mlflow_state: Path) -> None:
    settings = stack_settings(tmp_path, mlflow_dir=mlflow_state)  # a model name never trained
    try:
        with pytest.raises(StackError, match="train first: mlcanary train"):
            up(settings)
        assert recorded_pids(tmp_path) == {}
    finally:
        down(settings)


def test_up_refuses_a_port_taken_by_a_stranger(tmp_path: Path, mlflow_state: Path, stack: LocalStack) -> None:
    port = free_ports(1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        settings = stack_settings(
            tmp_path, mlflow_dir=mlflow_state, model_name=stack.model, **{"serving.front_door_port": port}
        )
        try:
            with pytest.raises(StackError, match=f"serving.front_door_port={port}.*not ours"):
                up(settings)
            assert recorded_pids(tmp_path) == {}
        finally:
            down(settings)


# -- the running stack ---------------------------------------------------------------------------


def test_split_serves_both_arms_and_every_acknowledged_request_is_logged(stack: LocalStack) -> None:
    champion, candidate = _versions(stack)
    stack.backend.deploy(stack.model, champion, candidate, 20)
    expected_version = {"champion": champion, "candidate": candidate}

    replies = stack.send(200)

    assert len(replies) == 200
    assert count_by(replies, "status") == {200: 200}
    arms = count_by(replies)
    print(f"\n200 requests at 80/20: {dict(arms)}")
    assert set(arms) == {"champion", "candidate"}
    # Loose binomial bound (5 sigma): this checks the split is live, not its precision.
    assert abs(arms["candidate"] - 40) <= 5 * math.sqrt(200 * 0.2 * 0.8)
    for reply in replies:
        assert reply.version == expected_version[str(reply.arm)]

    logged = stack.wait_for_logged([r.request_id for r in replies], timeout_s=30)
    missing = {r.request_id for r in replies} - set(logged.index)
    assert not missing, f"{len(missing)} acknowledged requests not in the store, e.g. {sorted(missing)[:3]}"
    instances = stack.instances(200)
    for index, reply in enumerate(replies):
        row = logged.loc[reply.request_id]
        assert row["arm"] == reply.arm
        assert row["version"] == expected_version[str(reply.arm)]
        assert row["status_code"] == 200
        assert row["latency_ms"] > 0
        assert row["prediction"] == reply.body["predictions"][0]
        assert row["probability"] == pytest.approx(reply.body["probabilities"][0])
        for feature, value in instances[index].items():
            assert row[feature] == value, (reply.request_id, feature)


def test_up_again_converges_without_restarting_anything(stack: LocalStack) -> None:
    champion, candidate = _versions(stack)
    stack.backend.deploy(stack.model, champion, candidate, 50)
    before = recorded_pids(stack.state_dir)

    info = up(stack.settings, candidate_percent=20)

    assert recorded_pids(stack.state_dir) == before
    assert (info.champion_version, info.candidate_version) == (champion, candidate)
    assert info.serving.traffic == {"champion": 80, "candidate": 20}
    assert info.front_door_url == stack.front_door


def test_status_reports_what_envoy_serves_and_set_traffic_moves_it(stack: LocalStack) -> None:
    champion, candidate = _versions(stack)
    backend = stack.backend
    backend.deploy(stack.model, champion, candidate, 20)

    status = backend.status(stack.model)
    assert status.traffic == {"champion": 80, "candidate": 20}
    assert status.endpoint == stack.front_door
    assert (status.arms["champion"].version, status.arms["champion"].ready) == (champion, True)
    assert (status.arms["candidate"].version, status.arms["candidate"].ready) == (candidate, True)

    # The persisted intent is not what status reports: Envoy's admin endpoint is.
    weights_file = backend.layout.weights_path
    saved = weights_file.read_text()
    try:
        weights_file.write_text('{"champion": 1, "candidate": 99}')
        assert backend.status(stack.model).traffic == {"champion": 80, "candidate": 20}
    finally:
        weights_file.write_text(saved)

    changed = backend.set_traffic(stack.model, 50)
    assert changed.traffic == {"champion": 50, "candidate": 50}
    assert backend.status(stack.model).traffic == {"champion": 50, "candidate": 50}
    assert EnvoyProxy(backend.layout).observed_weights() == Weights(50, 50)

    whole = stack_status(stack.settings)
    assert whole.healthy, whole
    assert {name for name, p in whole.processes.items() if p.running} == {
        "collector",
        "envoy",
        "model-champion",
        "model-candidate",
    }


def test_rollback_reaches_envoy_within_a_second_and_retires_the_candidate(stack: LocalStack) -> None:
    champion, candidate = _versions(stack)
    backend = stack.backend
    backend.deploy(stack.model, champion, candidate, 50)
    candidate_pid = stack.server_pid("candidate")
    assert candidate_pid is not None

    status = backend.rollback(stack.model)

    change = backend.last_change
    assert change is not None
    assert change.action == "rollback"
    print(f"\nrollback: 100/0 confirmed by Envoy {change.elapsed_ms:.1f} ms after the call")
    assert change.elapsed_ms < 1000  # correctness bound from issue 3, not a performance goal
    assert status.detail is not None
    assert "ms after the call" in status.detail
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert backend.status(stack.model).traffic == {"champion": 100, "candidate": 0}
    assert _wait_gone(candidate_pid), "the candidate server is still running"
    assert stack.server_pid("candidate") is None
    assert not backend.status(stack.model).arms["candidate"].ready

    replies = stack.send(50)
    assert count_by(replies, "status") == {200: 50}
    assert count_by(replies) == {"champion": 50}
    assert {r.version for r in replies} == {champion}

    with pytest.raises(ServingError, match="no ready candidate"):
        backend.set_traffic(stack.model, 10)
    assert backend.rollback(stack.model).traffic == {"champion": 100, "candidate": 0}  # idempotent


def test_promote_moves_the_candidate_version_to_the_champion_arm(stack: LocalStack) -> None:
    champion, candidate = _versions(stack)
    backend = stack.backend
    backend.deploy(stack.model, champion, candidate, 20)
    assert backend.status(stack.model).arms["candidate"].version == candidate

    # The champion's server is replaced while all traffic is on the candidate: nothing may fail.
    with stack.background_traffic() as during:
        status = backend.promote(stack.model)
        time.sleep(0.2)  # a few requests after the candidate server stopped, too

    served = count_by(during, "version")
    print(f"\n{len(during)} requests during promote, by version served: {dict(served)}")
    assert [r for r in during if r.status != 200] == []
    assert served.get(candidate, 0) > 0
    assert during[-1].version == candidate
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert (status.arms["champion"].version, status.arms["champion"].ready) == (candidate, True)
    assert not status.arms["candidate"].ready
    assert stack.server_pid("candidate") is None
    assert stack.model_info("champion")["version"] == candidate
    replies = stack.send(30)
    assert count_by(replies, "status") == {200: 30}
    assert {(r.arm, r.version) for r in replies} == {("champion", candidate)}

    again = backend.promote(stack.model)
    assert again.traffic == {"champion": 100, "candidate": 0}
    assert again.arms["champion"].version == candidate
    assert again.detail is not None
    assert "no-op" in again.detail


def test_a_crashed_candidate_fails_its_share_at_the_front_door(stack: LocalStack) -> None:
    backend = stack.backend
    serving = backend.status(stack.model).arms["champion"].version
    assert serving is not None
    other = stack.champion_version if serving != stack.champion_version else _versions(stack)[1]
    backend.deploy(stack.model, serving, other, 50)
    pid = stack.server_pid("candidate")
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid)
    killed_at = datetime.now(UTC)
    replies = stack.send(100)

    statuses = count_by(replies, "status")
    print(f"\n100 requests at 50/50 with the candidate killed: {dict(statuses)}")
    assert set(statuses) <= {200, 503}
    assert statuses.get(503, 0) > 0
    assert all(r.arm == "champion" and r.version == serving for r in replies if r.status == 200)
    assert all(r.arm != "champion" for r in replies if r.status == 503)
    # The dead server logged none of its 503s; Envoy's proxy-error log attributes every one of them
    # to the candidate, which is what the error checks count (the log is flushed about once a second).
    proxy_errors = EnvoyProxyErrors.from_settings(stack.settings)
    deadline = time.monotonic() + 10.0
    while True:
        found = proxy_errors(killed_at, killed_at, datetime.now(UTC))
        if found["candidate"].total >= statuses[503] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found == {
        "candidate": ProxyErrorCount(statuses[503], statuses[503]),
        "champion": ProxyErrorCount(0, 0),
    }
    status = backend.status(stack.model)
    assert status.traffic == {"champion": 50, "candidate": 50}
    assert not status.arms["candidate"].ready
    assert status.arms["champion"].ready
    assert status.detail is not None
    assert "candidate gets 50% of traffic but is not ready" in status.detail
    with pytest.raises(ServingError, match="not ready"):
        backend.promote(stack.model)


def test_down_stops_everything_and_is_idempotent(stack: LocalStack) -> None:
    pids = recorded_pids(stack.state_dir)
    assert {"envoy", "collector", "model-champion"} <= set(pids)

    stopped = down(stack.settings)

    assert {"envoy", "collector", "model-champion"} <= set(stopped)
    survivors = [name for name, pid in pids.items() if not _wait_gone(pid)]
    assert survivors == []
    assert list((stack.state_dir / RUN_DIRNAME).glob("*.pid")) == []
    assert down(stack.settings) == []
    status = stack.backend.status(stack.model)
    assert status.traffic is None
    assert not any(arm.ready for arm in status.arms.values())
    assert not stack_status(stack.settings).running
