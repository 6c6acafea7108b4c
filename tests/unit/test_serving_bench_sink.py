"""The mirror benchmark's sink (``benchmarks/serving/sink.py``): it passes the backend's readiness
probe as the candidate and answers the mirrored copies at once, over keep-alive."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from mlcanary.runtime.processes import wait_for_port
from mlcanary.testing.ports import free_ports


@pytest.fixture(scope="module")
def sink_url() -> Iterator[str]:
    (port,) = free_ports(1)
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.serving.sink", str(port), "m", "7"])
    try:
        wait_for_port("127.0.0.1", port, timeout_s=30.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_sink_looks_ready_and_serves_the_model_version(sink_url: str) -> None:
    with httpx.Client(base_url=sink_url, trust_env=False) as client:
        assert client.get("/v2/health/ready").json() == {"ready": True}
        status = client.get("/v1/models/m").json()

    assert status["ready"] is True
    assert status["version"] == "7"


def test_the_sink_answers_copies_over_one_keep_alive_connection(sink_url: str) -> None:
    with httpx.Client(base_url=sink_url, trust_env=False) as client:
        answers = [client.post("/v1/models/m:predict", content=b'{"instances": [[1, 2]]}') for _ in range(3)]
        answers.append(client.post("/v1/models/m:predict", content=b""))

    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert all(a.json() == {} for a in answers)
    assert all(a.http_version == "HTTP/1.1" for a in answers)


def test_the_sink_refuses_bad_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving.sink", "not-a-port"], capture_output=True, text=True
    )

    assert done.returncode == 2
    assert "usage" in done.stderr
