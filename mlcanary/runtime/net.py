"""Local network helpers: is a TCP port taken, and a host as it appears in a URL."""

from __future__ import annotations

import socket


def url_host(host: str) -> str:
    """``host`` as it appears in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def port_in_use(host: str, port: int, timeout_s: float = 0.25) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
