"""The platform's HTTP client retries a busy server's 429/502/503 (Prefect answers 503 while its
SQLite database is locked), resending the same body, and gives up with the last answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mlcanary.platform.prefect_api import http_client
from mlcanary.platform.retrying_transport import RetryingTransport


class _Script:
    """Statuses the server answers in turn (the last one repeats) and the bodies it received."""

    def __init__(self) -> None:
        self.statuses: list[int] = [200]
        self.bodies: list[bytes] = []
        self.headers: dict[str, str] = {}


@pytest.fixture
def server() -> Iterator[tuple[str, _Script]]:
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            script.bodies.append(body)
            index = min(len(script.bodies) - 1, len(script.statuses) - 1)
            answer = f'{{"attempt": {len(script.bodies)}}}'.encode()
            self.send_response(script.statuses[index])
            for name, value in script.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(waits: list[float], **options: float) -> httpx.Client:
    transport = RetryingTransport(sleep=waits.append, **options)  # type: ignore[arg-type]
    return httpx.Client(transport=transport, timeout=5.0)


@pytest.mark.parametrize("busy", [503, 502, 429])
def test_a_busy_answer_is_retried_with_the_same_body_until_it_succeeds(
    server: tuple[str, _Script], busy: int
) -> None:
    url, script = server
    script.statuses = [busy, busy, 200]
    waits: list[float] = []
    with _client(waits) as client:
        answer = client.patch(f"{url}/schedules/1", json={"interval": 30.0})
    assert answer.status_code == 200
    assert answer.json() == {"attempt": 3}
    assert script.bodies == [b'{"interval":30.0}'] * 3
    assert waits == [0.25, 0.5]


def test_a_server_that_stays_busy_gets_the_last_answer_back_after_the_attempts(
    server: tuple[str, _Script],
) -> None:
    url, script = server
    script.statuses = [503]
    waits: list[float] = []
    with _client(waits, attempts=4, first_delay_s=1.0, max_delay_s=3.0) as client:
        answer = client.patch(url, content=b"x")
    assert answer.status_code == 503
    assert len(script.bodies) == 4
    assert waits == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("status", [200, 404, 409, 500])
def test_other_answers_are_returned_at_once(server: tuple[str, _Script], status: int) -> None:
    url, script = server
    script.statuses = [status, 200]
    waits: list[float] = []
    with _client(waits) as client:
        assert client.patch(url, content=b"x").status_code == status
    assert len(script.bodies) == 1
    assert waits == []


def test_retry_after_lengthens_the_wait_up_to_the_cap(server: tuple[str, _Script]) -> None:
    url, script = server
    script.statuses = [503, 503, 200]
    script.headers = {"Retry-After": "2"}
    waits: list[float] = []
    with _client(waits, first_delay_s=0.1, max_delay_s=1.5) as client:
        assert client.patch(url, content=b"x").status_code == 200
    assert waits == [1.5, 1.5]


def test_the_platform_client_retries_and_its_probe_does_not(server: tuple[str, _Script]) -> None:
    url, script = server
    script.statuses = [503, 200]
    with http_client() as client:
        assert client.patch(url, content=b"x").status_code == 200
    assert len(script.bodies) == 2
    script.bodies.clear()
    with http_client(retry=False) as client:
        assert client.patch(url, content=b"x").status_code == 503
    assert len(script.bodies) == 1


def test_an_impossible_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryingTransport(attempts=0)
