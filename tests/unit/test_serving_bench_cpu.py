"""The serving benchmark's CPU accounting (``benchmarks/serving/cpu.py``): ``--pin-candidate`` puts
the candidate's server and the collector on their own core even though they are the client's own
children, and the machine's busy time is read from ``/proc/stat``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from benchmarks.serving.cpu import (
    core_busy_seconds,
    core_split,
    machine_busy_seconds,
    split_cores,
    tree_waited,
    waited_between,
)

# client 100 started the whole stack, as the benchmark does; 401 is a forked model-server worker.
TREE = {100: [200, 300, 400, 500], 200: [201], 400: [401], 500: [501]}
STACK = {"envoy": 200, "model-champion": 300, "model-candidate": 400, "collector": 500}


def test_core_split_keeps_the_stack_off_the_clients_side_even_as_its_children() -> None:
    split = core_split(100, STACK, lambda pid: TREE.get(pid, []))

    assert split == {
        100: "path",
        200: "path",
        201: "path",
        300: "path",
        400: "side",
        401: "side",
        500: "side",
        501: "side",
    }


def test_core_split_places_the_client_alone_not_its_other_children() -> None:
    tree = {**TREE, 100: [*TREE[100], 600]}  # 600: some other child of the client

    split = core_split(100, STACK, lambda pid: tree.get(pid, []))

    assert 600 not in split
    assert split[100] == "path"


def test_machine_busy_seconds_counts_user_nice_system_irq_softirq_not_idle_iowait_steal() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    line = "cpu  1000 20 300 999999 55555 4 6 777 0 0\n"

    assert machine_busy_seconds(line) == pytest.approx((1000 + 20 + 300 + 4 + 6) / hz)
    assert machine_busy_seconds("intr 1 2 3") == 0.0


def test_machine_busy_seconds_reads_this_machine() -> None:
    first = machine_busy_seconds()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU so the counter must move
        pass

    assert first > 0.0
    assert machine_busy_seconds() > first


_FAMILY = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(60)
"""


@pytest.fixture
def family() -> Iterator[tuple[int, int, int]]:
    """A real client process and two children of it: (client, champion, candidate) pids."""
    client = subprocess.Popen([sys.executable, "-c", _FAMILY], stdout=subprocess.PIPE, text=True)
    kids: list[int] = []
    try:
        assert client.stdout is not None
        kids = [int(x) for x in client.stdout.readline().split()]
        yield client.pid, kids[0], kids[1]
    finally:
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        client.kill()
        client.wait()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to split")
def test_split_cores_pins_real_children_of_the_client_to_their_sides(family: tuple[int, int, int]) -> None:
    client, champion, candidate = family
    cpus = sorted(os.sched_getaffinity(0))

    done = split_cores(client, {"model-champion": champion, "model-candidate": candidate})

    assert done is not None
    assert os.sched_getaffinity(candidate) == {cpus[-1]}
    assert os.sched_getaffinity(champion) == set(cpus[:-1])
    assert os.sched_getaffinity(client) == set(cpus[:-1])
    assert os.sched_getaffinity(0) == set(cpus)  # the caller itself is left alone


def test_tree_waited_reads_every_thread_of_a_live_process() -> None:
    waited = tree_waited(os.getpid())

    assert os.getpid() in waited  # the main thread's id is the pid
    assert all(seconds >= 0.0 for seconds in waited.values())
    assert tree_waited(2**22 + 12345) == {}  # no such process


def test_waited_between_counts_only_threads_present_in_both_readings() -> None:
    before = {1: 1.0, 2: 5.0, 3: 2.0}
    after = {1: 1.5, 3: 2.25, 4: 9.0}  # thread 2 exited, thread 4 started

    assert waited_between(before, after) == pytest.approx(0.75)


def test_core_busy_seconds_of_every_cpu_adds_up_to_the_machine() -> None:
    every = sorted(os.sched_getaffinity(0) | {0})
    cores = core_busy_seconds(range(os.cpu_count() or 1))

    assert cores == pytest.approx(machine_busy_seconds(), abs=1.0)
    assert 0.0 < core_busy_seconds(every[:1]) <= cores
    assert core_busy_seconds([]) == 0.0
