"""The mirroring benchmark's report: blocks kept per share, the interval row, and the core probe."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from benchmarks.serving.core_interference import STATES, probe, report_interference
from benchmarks.serving.mirror import MirrorArm, pooled, report_mirror, report_repeats


def _arm(share: float, shift: float, seed: int) -> MirrorArm:
    rng = np.random.default_rng(seed)
    arm = MirrorArm(share)
    for _ in range(10):
        block = list(10.0 + shift + rng.gamma(2.0, 1.0, 100))
        arm.client_ms += block
        arm.block_sizes.append(len(block))
    return arm


def test_client_blocks_split_the_samples_as_measured() -> None:
    arm = MirrorArm(0.1, client_ms=[1.0, 2.0, 3.0, 4.0, 5.0], block_sizes=[2, 0, 3])
    assert arm.client_blocks() == [[1.0, 2.0], [], [3.0, 4.0, 5.0]]


def test_the_report_gives_each_added_latency_its_interval() -> None:
    lines = report_mirror([_arm(0.0, 0.0, 1), _arm(0.1, 0.0, 2), _arm(1.0, 3.0, 3)], cores=2)
    rows = [line for line in lines if line.startswith("| 95 % interval")]
    assert len(rows) == 2
    ten, full = ([float(x) for x in cell.strip(" []").split(",")] for cell in (r.split("|")[4] for r in rows))
    assert ten[0] < 0.0 < ten[1]  # the same distribution: 0 inside
    assert 2.0 < full[0] < full[1] < 4.0  # shifted by 3 ms: resolved, near 3


def test_without_blocks_there_is_no_interval_row() -> None:
    arms = [MirrorArm(0.0, client_ms=[1.0, 2.0]), MirrorArm(1.0, client_ms=[1.0, 2.0])]
    assert not [line for line in report_mirror(arms, cores=2) if "interval" in line]


def test_pooling_runs_adds_them_up_and_drops_a_rotation_some_share_did_not_finish() -> None:
    first = [
        MirrorArm(0.0, client_ms=[1.0, 2.0, 3.0], server_ms=[0.5], block_sizes=[2, 1], mirrored=0),
        MirrorArm(1.0, client_ms=[4.0, 5.0], block_sizes=[2], mirrored=2, cpu_s={"envoy": 0.5}),
    ]
    second = [
        MirrorArm(0.0, client_ms=[6.0], block_sizes=[1], failed=1),
        MirrorArm(1.0, client_ms=[7.0], block_sizes=[1], mirrored=1, cpu_s={"envoy": 0.25}),
    ]
    base, full = pooled([first, second])
    # The first run stopped after the baseline's second block: that block has no partner and goes.
    assert base.client_blocks() == [[1.0, 2.0], [6.0]]
    assert full.client_blocks() == [[4.0, 5.0], [7.0]]
    assert (base.failed, full.mirrored, full.cpu_s) == (1, 3, {"envoy": 0.75})
    with pytest.raises(ValueError, match="same shares"):
        pooled([first, list(reversed(second))])


def test_the_repeats_table_gives_each_run_and_the_pooled_one() -> None:
    runs = [
        [_arm(0.0, 0.0, 10 * r + 1), _arm(0.1, 0.0, 10 * r + 2), _arm(1.0, 3.0, 10 * r + 3)] for r in range(3)
    ]
    lines = report_repeats(runs)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith(("| run", "| ---"))]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2", "3", "all, pooled"]
    for row in rows:
        cells = [cell.strip() for cell in row.split("|")[2:-1]]
        ten_p50, full_p50 = cells[0], cells[2]
        low, high = (float(x) for x in ten_p50.split("[")[1].rstrip("]").split(","))
        assert low < 0.0 < high  # 10 %: the same distribution in every run
        low, high = (float(x) for x in full_p50.split("[")[1].rstrip("]").split(","))
        assert 2.0 < low < high < 4.0  # 100 %: shifted by 3 ms
    widths = [
        float(c.split(",")[1].rstrip("] ")) - float(c.split("[")[1].split(",")[0])
        for c in (row.split("|")[2] for row in rows)
    ]
    assert widths[-1] < max(widths[:-1])  # three times the rotations: a narrower interval
    assert report_repeats(runs[:1]) == []


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_the_probe_spins_the_other_core_as_each_state_says_and_stops_the_spinner() -> None:
    affinity = os.sched_getaffinity(0)
    result = probe(rounds=2)
    assert set(result.median_ms) == set(STATES)
    assert all(ms > 0 for ms in result.median_ms.values())
    assert result.spinner_cpu_s["busy"] > result.spinner_cpu_s["10% busy"]
    assert result.spinner_cpu_s["busy"] > result.spinner_cpu_s["idle"]
    assert not multiprocessing.active_children()
    assert os.sched_getaffinity(0) == affinity
    text = "\n".join(report_interference(result))
    assert "CPU 1 busy" in text
