"""How sure a difference of percentiles is: a bootstrap over the interleaved blocks of a run.

The latency benchmarks measure two or more paths in rotating blocks (a block of requests to one
path, then one to the next), so that every path sees the same machine. Consecutive requests share
the machine's state (a noisy neighbour, a garbage collection), so they are not independent samples:
resampling single requests would make a difference look surer than it is. Resampling whole
*rotations* (block ``i`` of every path together) keeps that dependence, and the spread of the
recomputed difference is the interval a reader needs to tell a real cost from the run's noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "percentile_difference"]


@dataclass(frozen=True)
class Interval:
    """A difference ``other − base`` of one percentile, and its bootstrap interval."""

    difference: float
    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval is on one side of 0 (the difference is resolved)."""
        return self.low > 0.0 or self.high < 0.0

    def text(self) -> str:
        """``+0.54 [+0.12, +0.97]`` (milliseconds in the reports)."""
        return f"{self.difference:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def percentile_difference(
    base: Sequence[Sequence[float]],
    other: Sequence[Sequence[float]],
    q: float,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The ``q``-th percentile of ``other``'s samples minus that of ``base``'s, with a ``level``
    bootstrap interval from resampling rotations: block ``i`` of ``base`` and block ``i`` of
    ``other`` were measured in the same rotation and are drawn together. Both need the same number
    of blocks (at least 2) and no empty block; ``seed`` makes the interval reproducible."""
    if len(base) != len(other) or len(base) < 2:
        raise ValueError("base and other need the same number of blocks, at least 2")
    if any(len(block) == 0 for block in (*base, *other)):
        raise ValueError("every block needs at least one sample")
    if not 0 < level < 1 or not 0 <= q <= 100 or resamples < 1:
        raise ValueError("level must be in (0, 1), q in [0, 100] and resamples at least 1")
    base_blocks = [np.asarray(block, dtype=float) for block in base]
    other_blocks = [np.asarray(block, dtype=float) for block in other]
    observed = float(
        np.percentile(np.concatenate(other_blocks), q) - np.percentile(np.concatenate(base_blocks), q)
    )
    rng = np.random.default_rng(seed)
    count = len(base_blocks)
    differences = np.empty(resamples)
    for r in range(resamples):
        drawn = rng.integers(0, count, size=count)
        differences[r] = np.percentile(np.concatenate([other_blocks[i] for i in drawn]), q) - np.percentile(
            np.concatenate([base_blocks[i] for i in drawn]), q
        )
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return Interval(difference=observed, low=float(low), high=float(high), level=level)
