"""Latency percentiles from fixed log-spaced buckets: mergeable, bounded, with a stated accuracy.

Bucket ``i`` holds the latencies in ``[γ^i, γ^(i+1))`` milliseconds, ``γ = (1 + α) / (1 − α)``, and
stands for them by ``2·γ^(i+1) / (1 + γ)``, which is within relative error :data:`RELATIVE_ACCURACY`
(α) of every value in the bucket (the scheme of DDSketch, with fixed buckets so that histograms of
different times and processes add up exactly). Latencies below
:data:`~mlcanary.rollout.stats.LATENCY_FLOOR_MS` count as the floor, as in the log-latency sums.

Percentiles interpolate linearly between order statistics as ``numpy.percentile`` does, over the
buckets' representatives instead of the raw values; so each percentile is within relative error α of
``numpy.percentile`` over the raw (floored) latencies. A count of latencies above a threshold ``T``
counts whole buckets (those whose representative exceeds ``T``): it lies between the exact counts
above ``T / (1 − α)`` and above ``T / (1 + α)``.

A histogram is a sparse mapping ``bucket index → count``; the store computes indices in SQL with
:data:`LOG_GAMMA` (see :mod:`mlcanary.telemetry.rollup`), never in Python, so one expression decides
every latency's bucket.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GAMMA", "LOG_GAMMA", "RELATIVE_ACCURACY", "LatencyHistogram"]

_PUNCTUATION = str.maketrans("[],", "   ")
"""What separates the integers of :meth:`LatencyHistogram.to_json`'s pairs."""

RELATIVE_ACCURACY = 0.01
"""α: every percentile is within this relative error of the exact one over the raw latencies."""
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)


def representative(index: int | np.ndarray) -> float | np.ndarray:
    """The value standing for bucket ``index`` (within α of every latency in it)."""
    return 2.0 * np.power(GAMMA, np.asarray(index, dtype=float) + 1.0) / (1.0 + GAMMA)


@dataclass
class LatencyHistogram:
    """Counts of latencies per log-spaced bucket (see the module docstring); adding is merging."""

    counts: dict[int, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, other: Mapping[int, int] | LatencyHistogram) -> None:
        """Add another histogram's counts (or a ``bucket → count`` mapping) to this one."""
        items = other.counts if isinstance(other, LatencyHistogram) else other
        for index, count in items.items():
            self.counts[int(index)] = self.counts.get(int(index), 0) + int(count)

    def add_scaled(self, other: LatencyHistogram, sign: int = 1) -> None:
        """Add ``sign`` times another histogram's counts (the running sums' hot path: no conversions)."""
        counts = self.counts
        for index, count in other.counts.items():
            counts[index] = counts.get(index, 0) + sign * count

    def add_pairs(self, pairs: Iterable[Sequence[int]]) -> None:
        """Add ``[index, count]`` pairs, as :meth:`to_json` writes them, without building a histogram."""
        counts = self.counts
        for index, count in pairs:
            counts[index] = counts.get(index, 0) + count

    def add_json(self, texts: Iterable[str | None]) -> None:
        """Add histograms as :meth:`to_json` writes them (``None`` for none), summed at once in
        NumPy: a tick merges one per rollup row it reads, and a longer window has more rows. Each
        distinct text is parsed once per process (a bounded cache keyed by the text itself, so never
        stale): every tick reads the same old buckets again. Raises ValueError for text that is not
        ``[index, count]`` pairs of integers."""
        parsed = [_pairs(text) for text in texts if text]
        if not parsed:
            return
        flat = np.concatenate(parsed)
        if not flat.size:
            return
        indices, counts = flat[0::2], flat[1::2]
        low = int(indices.min())
        # Float weights are exact: counts stay far below 2**53.
        summed = np.bincount(indices - low, weights=counts)
        present = np.flatnonzero(summed)
        found = summed[present].astype(np.int64).tolist()
        mine = self.counts
        for index, count in zip((present + low).tolist(), found, strict=True):
            mine[index] = mine.get(index, 0) + count

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram]) -> LatencyHistogram:
        result = cls()
        for part in parts:
            result.add(part)
        return result

    def to_json(self) -> str:
        return json.dumps(sorted((i, c) for i, c in self.counts.items() if c), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> LatencyHistogram:
        histogram = cls()
        if text:
            histogram.add_pairs(json.loads(text))
        return histogram

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        indices = np.array(sorted(i for i, c in self.counts.items() if c), dtype=np.int64)
        counts = np.array([self.counts[int(i)] for i in indices], dtype=np.int64)
        return indices, counts

    def percentiles(self, qs: Iterable[float]) -> list[float] | None:
        """Percentiles (0–100) by linear interpolation between order statistics; None when empty."""
        indices, counts = self._sorted()
        n = int(counts.sum())
        if n == 0:
            return None
        cumulative = np.cumsum(counts)
        values = representative(indices)
        result = []
        for q in qs:
            rank = q / 100.0 * (n - 1)
            low = math.floor(rank)
            high = min(low + 1, n - 1)
            # The bucket of the k-th smallest value (0-based): the first whose cumulative count > k.
            at_low, at_high = (values[np.searchsorted(cumulative, k, side="right")] for k in (low, high))
            result.append(float(at_low + (rank - low) * (at_high - at_low)))
        return result

    def count_above(self, threshold: float) -> int:
        """Latencies in buckets whose representative exceeds ``threshold`` (see the module docstring)."""
        indices, counts = self._sorted()
        if not indices.size:
            return 0
        return int(counts[representative(indices) > threshold].sum())


@functools.lru_cache(maxsize=2048)
def _pairs(text: str) -> np.ndarray:
    """One histogram's JSON as ``[index, count, index, count, …]`` (read-only: the cache shares it)."""
    numbers = text.translate(_PUNCTUATION)
    if not numbers.strip():
        return np.zeros(0, dtype=np.int64)
    try:
        flat = np.fromstring(numbers, dtype=np.int64, sep=" ")
    except ValueError as exc:  # NumPy refuses text it cannot read to its end
        raise ValueError(f"not a latency histogram: {exc}") from None
    if flat.size % 2:
        raise ValueError("not a latency histogram: an index without its count")
    flat.setflags(write=False)
    return flat
