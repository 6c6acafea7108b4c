"""The real collector app served by uvicorn in a thread of the test process, on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from mlcanary.telemetry.collector import create_collector_app
from mlcanary.telemetry.store import InferenceLogStore
from mlcanary.testing.ports import free_ports


@contextmanager
def collector_in_thread(store: InferenceLogStore) -> Iterator[str]:
    """Serve ``store`` through the collector until the block ends; yields its base URL."""
    (port,) = free_ports(1)
    server = uvicorn.Server(
        uvicorn.Config(create_collector_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "collector exited"
        assert time.monotonic() < deadline, "collector did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
