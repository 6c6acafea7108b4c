"""A stand-in for the candidate that answers every request at once, without a model: mirroring to
it leaves on the machine only what the user's path pays for the copy itself (Envoy copying the
request and reading the discarded answer), as in a cluster where the candidate runs elsewhere.

Run as a process: ``python -m benchmarks.serving.sink PORT MODEL VERSION``. It answers KServe's
readiness (``GET /v2/health/ready``) and model status (``GET /v1/models/MODEL``) as a ready server
of ``VERSION``, and any other request (the mirrored ``:predict`` copies) with ``200 {}`` once its
body is read. HTTP/1.1 with keep-alive, as Envoy's upstream connections use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def _response(body: dict[str, object]) -> bytes:
    content = json.dumps(body).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(content)}\r\n\r\n"
    return head.encode() + content


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, model: str, version: str
) -> None:
    status = _response({"name": model, "version": version, "arm": "candidate", "ready": True})
    ready, other = _response({"ready": True}), _response({})
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            target = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else ""
            if target == "/v2/health/ready":
                writer.write(ready)
            elif target == f"/v1/models/{model}":
                writer.write(status)
            else:
                writer.write(other)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int, model: str, version: str) -> None:
    """Answer on 127.0.0.1:``port`` until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(r, w, model, version), "127.0.0.1", port
    )
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def sink_for_candidate(state_dir: Path, port: int, model: str, version: str) -> Iterator[int]:
    """Stop the stack's candidate model server and answer on its ``port`` with a sink instead
    (on the CPUs the candidate was pinned to), yielding the sink's pid; the sink is stopped on exit
    (the candidate is not restarted: only for a run that takes the stack down next)."""
    from benchmarks.serving.cpu import pin_tasks
    from mlcanary.runtime.processes import find_running, wait_for_port

    candidate = find_running(state_dir, "model-candidate")
    if candidate is None:
        raise RuntimeError("no candidate model server to stand in for")
    cpus = os.sched_getaffinity(candidate.pid)
    candidate.stop(grace_s=10.0)
    sink = subprocess.Popen([sys.executable, "-m", "benchmarks.serving.sink", str(port), model, version])
    try:
        wait_for_port("127.0.0.1", port, timeout_s=30.0)
        pin_tasks(sink.pid, cpus)
        yield sink.pid
    finally:
        sink.terminate()
        try:
            sink.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or not args[0].isdigit():
        print("usage: python -m benchmarks.serving.sink PORT MODEL VERSION", file=sys.stderr)
        return 2
    asyncio.run(serve(int(args[0]), args[1], args[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
