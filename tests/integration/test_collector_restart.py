"""Durability: every event the collector acknowledged survives a SIGKILL, and pairing resumes after it.

The collector runs as a real process (``python -m mlcanary.telemetry.collector``). Four senders post
200 request/response pairs (half of them response first); once 150 events are acknowledged the
process is killed with SIGKILL while requests are still in flight. Before anything else is sent, the
database must hold every acknowledged half. A second process on the same database then receives
everything that was not acknowledged, and every pair must end up complete.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mlcanary.telemetry.store import InferenceLogStore
from mlcanary.testing.collector_process import collector_process
from mlcanary.testing.ports import free_ports

pytestmark = pytest.mark.integration

PAIRS = 200
KILL_AFTER_ACKS = 150
MODEL = "fraud"

Event = tuple[int, str]  # (pair number, "request" | "response")


def event_headers(pair: int, kind: str) -> dict[str, str]:
    arm = "candidate" if pair % 5 == 0 else "champion"
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"req-{pair:04d}",
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-source": f"mlcanary/local/{MODEL}/{arm}/v3",
        "ce-time": "2025-03-01T12:00:00Z",
        "ce-inferenceservicename": MODEL,
        "ce-mlcanaryarm": arm,
        "ce-mlcanaryversion": "3",
        "content-type": "application/json",
    }
    if kind == "response":
        headers["ce-mlcanarylatencyms"] = f"{1.0 + pair / 10:.1f}"
        headers["ce-mlcanarystatus"] = "200"
    return headers


def event_body(pair: int, kind: str) -> bytes:
    if kind == "request":
        return b'{"instances": [{"amount": %d.5, "country": "NL"}]}' % pair
    return b'{"predictions": [%d], "probabilities": [0.%02d]}' % (pair % 2, pair % 100)


def events() -> list[Event]:
    ordered: list[Event] = []
    for pair in range(PAIRS):
        halves = [(pair, "request"), (pair, "response")]
        ordered.extend(reversed(halves) if pair % 2 else halves)
    return ordered


def test_acknowledged_events_survive_sigkill_and_pairing_resumes(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'inference.db'}"
    log = tmp_path / "collector.log"
    (port,) = free_ports(1)
    base_url = f"http://127.0.0.1:{port}"
    todo = events()

    acked: list[Event] = []
    with collector_process(port, db_url, log=log, stop_grace_s=0) as first:

        def kill_when_enough() -> None:
            while len(acked) < KILL_AFTER_ACKS and first.poll() is None:
                time.sleep(0.001)
            os.kill(first.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_enough, daemon=True)
        killer.start()
        _send_tracking(base_url, todo, acked)
        killer.join(timeout=30)
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL

    assert KILL_AFTER_ACKS <= len(acked) < len(todo), "the kill must land mid-stream"

    # Every acknowledged half is in the database before anything is resent.
    with InferenceLogStore(db_url) as store:
        frame = store.fetch(MODEL).set_index("request_id")
    for pair, kind in acked:
        row = frame.loc[f"req-{pair:04d}"]
        if kind == "request":
            assert row["amount"] == pair + 0.5
        else:
            assert row["prediction"] == pair % 2
            assert row["status_code"] == 200

    # A new process on the same database pairs the halves that were acknowledged before the crash.
    acked_set = set(acked)
    remainder = [item for item in todo if item not in acked_set]
    with collector_process(port, db_url, log=log, stop_grace_s=0):
        acked_after, failed = _send_tracking(base_url, remainder, [])
        assert failed == []
        stats = httpx.get(f"{base_url}/stats", timeout=5).json()
    assert sorted(acked_after) == sorted(remainder)
    assert stats["pending_requests"] == stats["pending_responses"] == 0

    with InferenceLogStore(db_url) as store:
        frame = store.fetch(MODEL)
    assert len(frame) == PAIRS
    assert frame["request_id"].is_unique
    frame = frame.set_index("request_id")
    for pair in range(PAIRS):
        row = frame.loc[f"req-{pair:04d}"]
        assert row["amount"] == pair + 0.5
        assert row["prediction"] == pair % 2
        assert row["probability"] == pytest.approx((pair % 100) / 100)
        assert row["latency_ms"] == pytest.approx(1.0 + pair / 10, abs=0.05)
        assert row["arm"] == ("candidate" if pair % 5 == 0 else "champion")
        assert row["status_code"] == 200


def _send_tracking(base_url: str, todo: list[Event], acked: list[Event]) -> tuple[list[Event], list[Event]]:
    """Post ``todo`` from 4 threads, appending each acknowledged event to ``acked`` as it happens.

    Once the server is gone every remaining post fails fast, so this returns soon after a kill.
    Returns (acked, not acknowledged).
    """
    lock = threading.Lock()
    queue = iter(todo)
    dead = threading.Event()

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=10.0) as client:
            while not dead.is_set():
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                pair, kind = item
                try:
                    reply = client.post(
                        "/events", content=event_body(pair, kind), headers=event_headers(pair, kind)
                    )
                except httpx.TransportError:
                    dead.set()
                    continue
                if reply.status_code == 200:
                    with lock:
                        acked.append(item)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(worker) for _ in range(4)]:
            future.result()
    acked_set = set(acked)
    return acked, [item for item in todo if item not in acked_set]
