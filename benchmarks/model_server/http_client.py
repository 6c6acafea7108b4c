"""A lean HTTP/1.1 keep-alive client on asyncio streams: the same client for every server measured.

Deliberately minimal (one request in flight per connection, ``Content-Length`` bodies only) so
that its own cost is small and identical for each target; the bodies it receives are kept for the
correctness check, which runs after the timed window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """Where requests go: a name for the report, the port, the path and extra request headers."""

    name: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    host: str = "127.0.0.1"
    method: str = "POST"

    def request(self, body: bytes) -> bytes:
        if self.method == "GET":
            body = b""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{key}: {value}" for key, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection to a target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send one prepared request; (status, body) of the response."""
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value)
                break
        body = await self._reader.readexactly(length) if length else b""
        return status, body


@dataclass
class Samples:
    """What one target returned: latencies (ms), statuses, and (row index, body) pairs."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    answers: list[tuple[int, bytes]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, row: int, status: int, body: bytes, ms: float) -> None:
        self.latencies_ms.append(ms)
        self.statuses.append(status)
        self.answers.append((row, body))

    def extend(self, other: Samples) -> None:
        self.latencies_ms += other.latencies_ms
        self.statuses += other.statuses
        self.answers += other.answers
        self.seconds += other.seconds


async def sequential(targets: list[Target], bodies: list[bytes], count: int) -> dict[str, Samples]:
    """``count`` requests to each target, one at a time over one connection per target,
    interleaved request by request (the order rotates) so all see the same machine state."""
    connections = [Connection(target) for target in targets]
    for connection in connections:
        await connection.open()
    raws = {t.name: [t.request(body) for body in bodies] for t in targets}
    samples = {t.name: Samples() for t in targets}
    try:
        for i in range(count):
            row = i % len(bodies)
            shift = i % len(connections)
            for connection in connections[shift:] + connections[:shift]:
                name = connection.target.name
                started = time.perf_counter()
                status, body = await connection.send(raws[name][row])
                samples[name].add(row, status, body, (time.perf_counter() - started) * 1000.0)
    finally:
        for connection in connections:
            await connection.close()
    return samples


async def closed_loop(target: Target, bodies: list[bytes], connections: int, seconds: float) -> Samples:
    """``connections`` keep-alive connections, each sending its next request as soon as the last is
    answered, for ``seconds`` (after a short warm-up that is not counted)."""
    raws = [target.request(body) for body in bodies]
    samples = Samples()
    opened = [Connection(target) for _ in range(connections)]
    for connection in opened:
        await connection.open()
    counting = False
    stop_at = 0.0

    async def loop(connection: Connection, offset: int) -> None:
        i = offset
        while True:
            now = time.perf_counter()
            if counting and now >= stop_at:
                return
            row = i % len(raws)
            status, body = await connection.send(raws[row])
            if counting:
                samples.add(row, status, body, (time.perf_counter() - now) * 1000.0)
            i += connections

    try:
        tasks = [asyncio.create_task(loop(c, k)) for k, c in enumerate(opened)]
        await asyncio.sleep(min(0.5, seconds / 4))
        counting = True
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*tasks)
        samples.seconds = time.perf_counter() - started
    finally:
        for connection in opened:
            await connection.close()
    return samples
