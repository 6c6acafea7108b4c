"""``--workers``: several model-server processes on one port, each with its own payload logger.

The server runs as a real process (fork, shared listening socket, uvicorn in each worker) around a
small scikit-learn pipeline; a local HTTP inbox stands in for the collector.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import httpx
import pytest
from http_inbox import running_inbox

from mlcanary.data.synthetic import FEATURES, generate_transactions
from mlcanary.telemetry.events import CE_TYPE_REQUEST, CE_TYPE_RESPONSE
from mlcanary.testing.ports import free_ports

pytestmark = pytest.mark.integration

SERVER = textwrap.dedent(
    """
    import sys
    from mlcanary.data.schema import infer_schema
    from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
    from mlcanary.serving.local.model_server import ServedModel, ServeOptions, serve
    from models.pipeline import build_pipeline

    frame = generate_transactions(400, seed=3)
    features = infer_schema(frame, FEATURES)
    pipeline = build_pipeline(
        "logistic_regression",
        numeric=[s.name for s in features if s.kind == "numeric"],
        categorical=[s.name for s in features if s.kind == "categorical"],
    )
    pipeline.fit(frame[list(FEATURES)], frame[TARGET])
    served = ServedModel(name="fraud", version="1", arm="champion", predictor=pipeline, features=features)
    port, collector = int(sys.argv[1]), sys.argv[2]
    raise SystemExit(serve(served, ServeOptions("127.0.0.1", port, workers=2, collector_url=collector,
                                                 log_level="warning")))
    """
)


def test_two_workers_share_the_port_and_every_event_reaches_the_collector() -> None:
    (port,) = free_ports(1)
    rows = generate_transactions(5, seed=4)[list(FEATURES)].to_dict("records")
    with running_inbox() as inbox:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port), f"http://{inbox.base}/events"],
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base, process)
            pids: set[int] = set()
            ids: list[str] = []
            deadline = time.monotonic() + 30
            while (len(pids) < 2 or len(ids) < 20) and time.monotonic() < deadline:
                # A new connection per request: the kernel hands each to whichever worker accepts.
                with httpx.Client(base_url=base) as client:
                    pids.add(client.get("/metrics/batching").json()["pid"])
                    answer = client.post("/v1/models/fraud:predict", json={"instances": rows[:2]})
                    assert answer.status_code == 200
                    ids.append(answer.headers["x-request-id"])
            assert len(pids) == 2, "both workers should have accepted connections"
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        # Each worker flushed its own queue on the graceful shutdown: nothing acknowledged is lost.
        # The payload loggers post batches (CloudEvents batched mode): a JSON array of events.
        documents = [document for item in inbox.received for document in item.body]
    kinds = Counter((document.get("id"), document.get("type")) for document in documents)
    for request_id in ids:
        assert kinds[(request_id, CE_TYPE_REQUEST)] == 1
        assert kinds[(request_id, CE_TYPE_RESPONSE)] == 1


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the model server exited"
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the model server did not become ready")
