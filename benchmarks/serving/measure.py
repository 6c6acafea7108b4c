"""Clocks, percentiles and the way numbers are printed in the report; progress goes to stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: system-wide, so comparable between this process and the client's."""
    return time.monotonic_ns()


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:,.{digits}f}"


def signed(value: float) -> str:
    return "—" if value != value else f"{value:+,.2f}"


def say(message: str) -> None:
    """Progress on stderr, so stdout is only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def dist(values: Sequence[float | None]) -> tuple[str, str, str]:
    """Median, P95 and max of the known values, as report text."""
    got = [v for v in values if v is not None]
    if not got:
        return "—", "—", "—"
    return fmt(pct(got, 50)), fmt(pct(got, 95)), fmt(max(got))
