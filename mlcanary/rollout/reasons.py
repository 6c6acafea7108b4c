"""Wording of check results for people: one sentence per check, numbers in the metric's own units.

Pure formatting: every function returns text and judges nothing. A sentence names what was measured
on each arm, the limit, the test and what it concluded, e.g.
``error_rate: candidate 3.10 % 5xx (31 of 1,000) vs champion 1.00 % (40 of 4,000); fails above
1.70 % (champion × 1.5 + 0.2 points); difference +2.10 points, CS [+1.02, +3.20] → confidently
above the limit (mixture-SPRT confidence sequence, α 0.019)``.
"""

from __future__ import annotations

import math

from mlcanary.rollout.state import Verdict


def count(n: int) -> str:
    """``1234`` → ``"1,234"``."""
    return f"{n:,}"


def percent(rate: float | None) -> str:
    """A share as a percentage with enough digits for small rates (``0.0123`` → ``"1.23 %"``)."""
    if rate is None or not math.isfinite(rate):
        return "n/a"
    value = rate * 100
    digits = 2 if abs(value) < 10 else 1
    return f"{value:.{digits}f} %"


def share_of(successes: int, n: int) -> str:
    """``"3.10 % (31 of 1,000)"``."""
    return f"{percent(successes / n if n else None)} ({count(successes)} of {count(n)})"


def number(value: float | None) -> str:
    """A plain number with four significant digits (``"n/a"`` for None or non-finite)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def conclusion(verdict: Verdict, direction: str, *, below_floor: int | None = None) -> str:
    """What the test concluded, from the harm's side (``direction``: which change is harm)."""
    if below_floor is not None:
        return f"not judged below {count(below_floor)} requests per arm"
    if verdict == "fail":
        side = {"increase_is_bad": "above", "decrease_is_bad": "below"}.get(direction, "beyond")
        return f"confidently {side} the limit"
    if verdict == "pass":
        return "confidently within the limit"
    if verdict == "error":
        return "not measured"
    return "not yet decided"


def limit_text(
    direction: str, tolerance: float, relative_tolerance: float, *, scale: str, champion: float | None
) -> str:
    """Where a two-arm check starts to fail, in words and (when the champion's value is known) as a
    value: ``"1.70 % (champion × 1.5 + 0.2 points)"``.

    ``scale`` is ``"rate"`` (shares; tolerance in points), ``"ratio"`` (log-scale means such as
    latency: the relative tolerance is the allowed change) or ``"value"`` (plain means).
    """
    if scale == "ratio":
        side = {"increase_is_bad": "above +", "decrease_is_bad": "below −"}.get(direction, "beyond ±")
        return f"{side}{relative_tolerance:.0%} on the champion's"
    show = percent if scale == "rate" else number
    unit = " points" if scale == "rate" else ""
    amount = f"{tolerance * 100 if scale == 'rate' else tolerance:g}{unit}"
    if direction == "change_is_bad":
        spread = " + ".join(
            p
            for p in (amount if tolerance else "", f"{relative_tolerance:.0%}" if relative_tolerance else "")
            if p
        )
        formula = f"champion ± ({spread or 0})"
        if champion is None:
            return formula
        low = champion * (1 - relative_tolerance) - tolerance
        high = champion * (1 + relative_tolerance) + tolerance
        if scale == "rate":
            low, high = max(low, 0.0), min(high, 1.0)
        return f"outside {show(low)} – {show(high)} ({formula})"
    sign = 1.0 if direction == "increase_is_bad" else -1.0
    formula = "champion"
    if relative_tolerance:
        formula += f" × {1 + sign * relative_tolerance:g}"
    if tolerance:
        formula += f" {'+' if sign > 0 else '−'} {amount}"
    if champion is None:
        return formula
    bound = champion * (1 + sign * relative_tolerance) + sign * tolerance
    return f"{'above' if sign > 0 else 'below'} {show(bound)} ({formula})"
