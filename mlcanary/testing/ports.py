"""Free local ports, so several local stacks (tests, benchmarks) can run side by side."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from mlcanary.config import PORT_SETTINGS

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_POOL_SIZE = 12_000


def port_pool(env: Mapping[str, str] | None = None) -> range:
    """Where :func:`free_ports` looks: the ports just below the kernel's ephemeral range, split
    between pytest-xdist workers (``PYTEST_XDIST_WORKER`` / ``PYTEST_XDIST_WORKER_COUNT``).

    Why not a port the kernel picks (bind to port 0): those come from the ephemeral range, where
    the kernel also takes the source port of every outgoing connection, so a port found free can be
    taken by any client before the server that was meant to listen on it starts (seen in the suite:
    a model server training for seconds before it binds). Below that range no outgoing connection
    lands, and each worker's slice is its own. An empty range (a kernel whose ephemeral range starts
    low) means: let the kernel pick."""
    env = os.environ if env is None else env
    try:
        low = int(_EPHEMERAL_RANGE.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    start = max(1_024, low - _POOL_SIZE)
    workers = max(1, int(env.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    worker = int((env.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0) % workers
    share = (low - start) // workers
    return range(start + worker * share, start + (worker + 1) * share)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports on ``host`` that were free a moment ago (all held at once while
    found), from :func:`port_pool`. Raises ``RuntimeError`` when the pool has fewer free ports."""
    pool = port_pool()
    with ExitStack() as stack:
        if len(pool) < n:
            sockets = [
                stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)
            ]
            for sock in sockets:
                sock.bind((host, 0))
            return [int(sock.getsockname()[1]) for sock in sockets]
        found: list[int] = []
        for port in random.sample(pool, len(pool)):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError(f"fewer than {n} free ports on {host} in {min(pool)}–{max(pool)}")


def free_port_overrides(host: str = "127.0.0.1") -> dict[str, int]:
    """Settings overrides moving every port of :data:`PORT_SETTINGS` to a free one."""
    return dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS), host), strict=True))


def free_port_env(host: str = "127.0.0.1") -> dict[str, str]:
    """``MLCANARY_SERVING__*_PORT`` environment variables moving every port to a free one (for
    commands run as processes)."""
    return {
        "MLCANARY_" + name.upper().replace(".", "__"): str(port)
        for name, port in free_port_overrides(host).items()
    }
