"""The traffic client, a separate process (its GIL and CPU are not the flipper's): ``python -m
benchmarks.serving.client_worker CONFIG``. Imports nothing heavy: httpx and the header names."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from mlcanary.serving.headers import ARM_SERVED_HEADER, ROUTES_VERSION_HEADER


def client_worker(config_path: Path) -> int:
    """Send predictions through the front door from N threads until SIGTERM or the bounds.

    Writes ``ready`` beside ``out`` once every thread has had a response, and on exit one JSON
    object: records ``[t_send_ns, t_recv_ns, status, arm, routes_version]`` (status 0 = transport
    error).
    """
    config = json.loads(config_path.read_text())
    url, path, threads = config["url"], config["path"], int(config["threads"])
    bodies = [b.encode() for b in config["bodies"]]
    out, ready = Path(config["out"]), Path(config["ready"])
    max_s, max_requests = float(config["max_s"]), int(config["max_requests"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    records: list[list[list[Any]]] = [[] for _ in range(threads)]
    answered = [threading.Event() for _ in range(threads)]
    errors: list[str] = []
    deadline = time.monotonic() + max_s
    per_thread = max_requests // threads
    headers = {"content-type": "application/json"}

    def run(k: int) -> None:
        mine = records[k]
        with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as client:
            for i in range(per_thread):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                t_send = time.monotonic_ns()
                try:
                    response = client.post(
                        path, content=bodies[(i * threads + k) % len(bodies)], headers=headers
                    )
                except httpx.HTTPError as exc:
                    mine.append([t_send, time.monotonic_ns(), 0, None, None])
                    if len(errors) < 20:
                        errors.append(repr(exc))
                    continue
                t_recv = time.monotonic_ns()
                mine.append(
                    [
                        t_send,
                        t_recv,
                        response.status_code,
                        response.headers.get(ARM_SERVED_HEADER),
                        response.headers.get(ROUTES_VERSION_HEADER),
                    ]
                )
                answered[k].set()

    workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for worker in workers:
        worker.start()
    if all(event.wait(timeout=max(0.0, deadline - time.monotonic())) for event in answered):
        ready.write_text("ready")
    while not stop.is_set() and time.monotonic() < deadline and any(w.is_alive() for w in workers):
        stop.wait(0.05)
    stop.set()
    for worker in workers:
        worker.join(timeout=15)
    merged = [record for mine in records for record in mine]
    merged.sort(key=lambda record: record[1])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"records": merged, "errors": errors}))
    tmp.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(client_worker(Path(sys.argv[1])))
