"""Durations, written and read one way: the policy's spelling (``15m``) and the text people read.

``parse_duration`` / ``format_duration`` round-trip the configuration's spelling (``90s``, ``15m``,
``1h``, ``2d`` or a number of seconds); :func:`human_duration` is the one display form used in the
judge's reasons, the CLI, the demo and the report (``42 s``, ``1.5 min``, ``2.0 h``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: Any) -> Any:
    """``"15m"`` → ``timedelta(minutes=15)``; numbers are seconds; timedeltas pass through."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
        raise ValueError(f"not a duration: {value!r} (write e.g. 90s, 15m, 1h, 2d)")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the units above."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def human_duration(value: timedelta | float | None) -> str:
    """A duration (or a number of seconds) for people: ``"42 s"``, ``"1.5 min"``, ``"25.0 h"``;
    ``"—"`` for ``None``."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
