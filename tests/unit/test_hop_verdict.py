"""The Envoy-hop goal's verdict from the bootstrap interval (benchmarks/model_server/report.py)."""

from __future__ import annotations

import numpy as np

from benchmarks.model_server.http_client import Samples
from benchmarks.model_server.report import HOP_BLOCK, _hop_verdict, hop_interval


def _hop(extra_ms: float, count: int, seed: int = 0) -> dict[str, Samples]:
    rng = np.random.default_rng(seed)
    paths = {}
    for name, extra in (("direct", 0.0), ("our Envoy", 0.3 + extra_ms), ("minimal Envoy", 0.3)):
        samples = Samples()
        for i, ms in enumerate(0.4 + extra + rng.gamma(2.0, 0.05, count)):
            samples.add(i, 200, b"", float(ms))
        paths[name] = samples
    return paths


def test_an_envoy_as_cheap_as_the_minimal_one_meets_the_goal() -> None:
    interval = hop_interval(_hop(0.0, 4000), 50)
    assert interval is not None
    assert _hop_verdict(interval.difference, interval) == "**met**"


def test_an_envoy_half_a_millisecond_slower_misses_it() -> None:
    interval = hop_interval(_hop(0.5, 4000), 50)
    assert interval is not None
    assert interval.low > 0.1
    assert _hop_verdict(interval.difference, interval) == "**missed**"


def test_a_run_too_short_to_tell_says_so() -> None:
    interval = hop_interval(_hop(0.1, 4 * HOP_BLOCK), 99)
    assert interval is not None
    assert interval.low < 0.1 < interval.high
    assert _hop_verdict(interval.difference, interval) == "not resolved by this run"


def test_without_two_blocks_the_point_estimate_decides() -> None:
    assert hop_interval(_hop(0.0, HOP_BLOCK), 50) is None
    assert _hop_verdict(0.05, None) == "**met**"
    assert _hop_verdict(0.2, None) == "**missed**"
