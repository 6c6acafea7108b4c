"""A local HTTP endpoint that records what is POSTed to it, for notification tests.

Imported by tests in any folder (``tests/`` is on ``sys.path`` through its conftest). Answers 200,
or 500 for paths under ``/fail``; keeps each request's path, JSON body and headers.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST the inbox got."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class Inbox(ThreadingHTTPServer):
    """The recording server (see the module docstring); ``base`` is ``127.0.0.1:<port>``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [item.body for item in self.received]

    def at(self, prefix: str) -> list[dict[str, Any]]:
        """The bodies POSTed to paths starting with ``prefix``."""
        return [item.body for item in self.received if item.path.startswith(prefix)]


class _Handler(BaseHTTPRequestHandler):
    server: Inbox

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length))
        self.server.received.append(Received(self.path, body, dict(self.headers)))
        self.send_response(500 if self.path.startswith("/fail") else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return None


@contextmanager
def running_inbox() -> Iterator[Inbox]:
    """An :class:`Inbox` serving on a free port until the block ends."""
    server = Inbox()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
