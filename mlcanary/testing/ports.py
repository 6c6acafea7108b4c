"""Free local ports, so several local stacks (tests, benchmarks) can run side by side."""

from __future__ import annotations

import socket
from contextlib import ExitStack

from mlcanary.config import PORT_SETTINGS


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports on ``host`` that were free a moment ago (all held at once)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


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
