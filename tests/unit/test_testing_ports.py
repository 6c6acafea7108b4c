"""``mlcanary.testing.ports``: free ports for side-by-side stacks, away from the ports the kernel
hands to outgoing connections and apart for each pytest-xdist worker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mlcanary.testing import ports
from mlcanary.testing.ports import free_ports, port_pool


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="utf-8").split()[0])


def test_the_pool_ends_where_the_kernels_ephemeral_range_begins() -> None:
    pool = port_pool({})
    assert pool.stop == _ephemeral_low()
    assert pool.start >= 1_024
    assert len(pool) > 1_000


def test_xdist_workers_get_disjoint_slices_of_the_pool() -> None:
    whole = port_pool({})
    slices = [
        port_pool({"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": "3"}) for i in range(3)
    ]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(slices[a]) & set(slices[b])
    assert all(s.start >= whole.start and s.stop <= whole.stop for s in slices)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    found = free_ports(8)
    assert len(set(found)) == 8
    assert all(port in port_pool() for port in found)
    for port in found:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_skipped_and_a_pool_too_small_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken, socket.socket() as probe:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe.bind(("127.0.0.1", 0))
        busy, free = taken.getsockname()[1], probe.getsockname()[1]
        probe.close()
        monkeypatch.setattr(ports, "port_pool", lambda: [busy, free])
        assert all(free_ports(1) == [free] for _ in range(5))
        with pytest.raises(RuntimeError, match="fewer than 2 free ports"):
            free_ports(2)
