"""The judges ours is measured against, from their documented rules
(``shared/reference/judging.md``), on the same simulated streams (minute buckets, the policy's first
traffic step held for the whole release):

* **Flagger-style**: every minute, canary-only checks on the last minute against absolute
  thresholds (request success rate, P99 latency); a failed check (or a minute without canary
  requests: "no values found") counts towards ``threshold`` = 5 failed checks → roll back; 5 passing
  checks walk the weight from 10 % to ``maxWeight`` 50 % in steps of 10 → promote. Thresholds are set
  as an operator who knows the baseline would: success rate ≥ 1 − 2 × the champion's error rate, P99
  ≤ 2 × the champion's P99. No model signals.
* **Kayenta-style**: hourly judgements over a 3 h lifetime, each comparing the last hour's per-minute
  values of the canary and a baseline of the canary's size running the champion's model, as
  Kayenta recommends (error rate, median latency, positive rate) with a
  one-sided Mann-Whitney U test at 98 % confidence and a 25 % effect floor (the canary's mean beyond
  1.25 × the baseline's, or in either direction for the positive rate); a judgement scoring below
  the marginal 75 (one metric of the three High) rolls back, three passing judgements promote.
* **Fixed 24 h window**: one fixed-horizon z-test per check at 24 h on the cumulative counts, with
  our failure margins and α split as ours (a test peeked at once): roll back if any fails, else
  promote.
* **Power analysis**: the fixed-horizon sample size (canary requests, 80/20 split, one-sided α 0.05,
  power 0.8) that detects the scenario's largest harm on the most sensitive metric: the limit a
  judge that knew the effect in advance could reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import stats as scipy_stats

from benchmarks.judge.ours import Outcome
from benchmarks.judge.streams import Stream
from benchmarks.judge.truth import Scenario
from mlcanary.rollout.policy import RolloutPolicy

MINUTE = 60.0
FLAGGER_THRESHOLD = 5
FLAGGER_STEPS = 5  # stepWeight 10 up to maxWeight 50
KAYENTA_JUDGEMENT_MIN = 60
KAYENTA_JUDGEMENTS = 3
KAYENTA_EFFECT = 0.25
KAYENTA_CONFIDENCE = 0.98
FIXED_WINDOW_S = 24 * 3600.0


def _per_minute(stream: Stream, values: np.ndarray) -> np.ndarray:
    per = round(MINUTE / stream.dt)
    usable = (len(values) // per) * per
    return values[:usable].reshape(-1, per, *values.shape[1:]).sum(axis=1)


def flagger(scenario: Scenario, stream: Stream) -> Outcome:
    """Flagger's analysis loop on the stream (see the module docstring)."""
    canary = stream.candidate
    requests = _per_minute(stream, canary.requests)
    errors = _per_minute(stream, canary.errors)
    per = round(MINUTE / stream.dt)
    # The minute's P99: the largest per-bucket P99 is a fair stand-in when buckets are finer.
    p99 = np.nanmax(canary.p99[: len(requests) * per].reshape(-1, per), axis=1) if per > 1 else canary.p99
    min_success = 1 - 2 * scenario.champion.error_rate
    max_p99 = 2 * scenario.champion.latency.percentiles()[2]
    failed = passed = 0
    cumulative = np.cumsum(requests)
    for minute in range(len(requests)):
        n = requests[minute]
        ok = n > 0 and (1 - errors[minute] / n) >= min_success and p99[minute] <= max_p99
        if ok:
            passed += 1
        else:
            failed += 1
        at = (minute + 1) * MINUTE
        if failed >= FLAGGER_THRESHOLD:
            return Outcome("rollback", at, int(cumulative[minute]), "checks failed", None)
        if passed >= FLAGGER_STEPS:
            return Outcome("promote", at, int(cumulative[minute]), "weight reached maxWeight", None)
    return Outcome("undecided", len(requests) * MINUTE, int(cumulative[-1]), "", None)


def _hodges_lehmann_high(canary: np.ndarray, baseline: np.ndarray, two_sided: bool) -> bool:
    if canary.size == 0 or baseline.size == 0:
        return False
    test = scipy_stats.mannwhitneyu(
        canary, baseline, alternative="two-sided" if two_sided else "greater", method="asymptotic"
    )
    alpha = 1 - KAYENTA_CONFIDENCE
    if not np.isfinite(test.pvalue) or test.pvalue >= (alpha if two_sided else alpha / 2):
        return False
    base = float(np.mean(baseline))
    shift = float(np.mean(canary)) - base
    floor = KAYENTA_EFFECT * abs(base)
    return abs(shift) > floor if two_sided else shift > floor


def kayenta(scenario: Scenario, stream: Stream) -> Outcome:
    """Kayenta's hourly canary analysis on the stream (see the module docstring); needs the stream's
    ``baseline`` arm."""
    if stream.baseline is None:
        raise ValueError(
            "Kayenta compares with a baseline of the canary's size: simulate(with_baseline=True)"
        )
    champion, canary = stream.baseline, stream.candidate
    series = {}
    for name, arm in (("champion", champion), ("canary", canary)):
        n = _per_minute(stream, arm.requests).astype(float)
        ok = n - _per_minute(stream, arm.errors)
        with np.errstate(divide="ignore", invalid="ignore"):
            series[name] = {
                "requests": n,
                "error_rate": _per_minute(stream, arm.errors) / n,
                "latency": _minute_median(stream, arm.p50),
                "positive_rate": _per_minute(stream, arm.positives) / ok,
            }
    cumulative = np.cumsum(series["canary"]["requests"])
    for judgement in range(1, KAYENTA_JUDGEMENTS + 1):
        hour = slice((judgement - 1) * KAYENTA_JUDGEMENT_MIN, judgement * KAYENTA_JUDGEMENT_MIN)
        end = judgement * KAYENTA_JUDGEMENT_MIN
        if end > len(cumulative):
            break
        highs = []
        for metric in ("error_rate", "latency", "positive_rate"):
            a = series["canary"][metric][hour]
            b = series["champion"][metric][hour]
            highs.append(
                _hodges_lehmann_high(a[np.isfinite(a)], b[np.isfinite(b)], metric == "positive_rate")
            )
        score = 100 * (1 - sum(highs) / len(highs))
        at = end * MINUTE
        if score < 75:
            failing = [m for m, h in zip(("error_rate", "latency", "positive_rate"), highs, strict=True) if h]
            return Outcome("rollback", at, int(cumulative[end - 1]), ", ".join(failing), None)
    last = min(KAYENTA_JUDGEMENTS * KAYENTA_JUDGEMENT_MIN, len(cumulative))
    return Outcome("promote", last * MINUTE, int(cumulative[last - 1]), "3 passing judgements", None)


def _minute_median(stream: Stream, p50: np.ndarray) -> np.ndarray:
    per = round(MINUTE / stream.dt)
    if per == 1:
        return p50
    usable = (len(p50) // per) * per
    with np.errstate(all="ignore"):
        return np.nanmedian(p50[:usable].reshape(-1, per), axis=1)


def _z_fails(estimate: float, margin: float, variance: float, alpha: float, sign: float) -> bool:
    if variance <= 0 or alpha <= 0:
        return False
    z = NormalDist().inv_cdf(1 - alpha)
    return sign * (estimate - margin) / math.sqrt(variance) > z


def fixed_window(scenario: Scenario, stream: Stream, policy: RolloutPolicy, seed: int) -> Outcome:
    """One fixed-horizon test per check at 24 h (see the module docstring)."""
    end = round(FIXED_WINDOW_S / stream.dt)
    b, c = stream.champion, stream.candidate
    total = {
        arm: {
            f: float(np.sum(getattr(a, f)[:end]))
            for f in ("requests", "errors", "log_sum", "log_sumsq", "slow", "positives")
        }
        for arm, a in (("b", b), ("c", c))
    }
    n_b, n_c = total["b"]["requests"], total["c"]["requests"]
    canary = int(n_c)
    failing: list[str] = []

    def proportion(name: str, k_b: float, m_b: float, k_c: float, m_c: float, direction: str) -> None:
        check = policy.checks[name]  # type: ignore[index]
        if m_b == 0 or m_c == 0:
            return
        p_b, p_c = k_b / m_b, k_c / m_c
        for sign in (
            (1.0, -1.0)
            if direction == "change_is_bad"
            else (1.0 if direction == "increase_is_bad" else -1.0,)
        ):
            factor = 1 + sign * check.relative_tolerance
            margin = sign * (check.tolerance + check.relative_tolerance * p_b)
            variance = p_c * (1 - p_c) / m_c + factor * factor * p_b * (1 - p_b) / m_b
            share = 2 if direction == "change_is_bad" else 1
            if _z_fails(p_c - p_b, margin, variance, policy.alpha_for(name) / share, sign):
                failing.append(name)
                return

    proportion("error_rate", total["b"]["errors"], n_b, total["c"]["errors"], n_c, "increase_is_bad")
    proportion("latency_p95", total["b"]["slow"], n_b, total["c"]["slow"], n_c, "increase_is_bad")
    ok_b, ok_c = n_b - total["b"]["errors"], n_c - total["c"]["errors"]
    proportion("positive_rate", total["b"]["positives"], ok_b, total["c"]["positives"], ok_c, "change_is_bad")
    cells_b, cells_c = b.cells[:end].sum(axis=0), c.cells[:end].sum(axis=0)
    proportion(
        "accuracy",
        cells_b[0] + cells_b[3],
        cells_b.sum(),
        cells_c[0] + cells_c[3],
        cells_c.sum(),
        "decrease_is_bad",
    )
    if n_b > 1 and n_c > 1:
        mean_b, mean_c = total["b"]["log_sum"] / n_b, total["c"]["log_sum"] / n_c
        var_b = (total["b"]["log_sumsq"] - n_b * mean_b**2) / (n_b - 1)
        var_c = (total["c"]["log_sumsq"] - n_c * mean_c**2) / (n_c - 1)
        check = policy.checks["latency"]
        margin = math.log1p(check.relative_tolerance) + check.tolerance
        if _z_fails(mean_c - mean_b, margin, var_b / n_b + var_c / n_c, policy.alpha_for("latency"), 1.0):
            failing.append("latency")
    paired = int(min(n_b - total["b"]["errors"], 2000) + min(ok_c, 2000))
    if paired:
        agree = np.random.default_rng(seed).binomial(paired, scenario.at(0.5)[2]) / paired
        limit = policy.checks["agreement"].threshold or 0.0
        if _z_fails(agree, limit, agree * (1 - agree) / paired or 1e-12, policy.alpha_for("agreement"), -1.0):
            failing.append("agreement")
    if failing:
        return Outcome("rollback", FIXED_WINDOW_S, canary, ", ".join(failing), None)
    return Outcome("promote", FIXED_WINDOW_S, canary, "no fixed-horizon test failed", None)


@dataclass(frozen=True)
class PowerLimit:
    """The fixed-horizon canary sample size for a scenario and the metric it comes from."""

    canary_requests: float
    metric: str


def power_limit(
    scenario: Scenario, candidate_share: float, alpha: float = 0.05, power: float = 0.8
) -> PowerLimit | None:
    """Canary requests a one-sided fixed-horizon test needs to detect the scenario's harm (see the
    module docstring); None for a good scenario."""
    if not scenario.bad:
        return None
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power)
    ratio = (1 - candidate_share) / candidate_share  # champion requests per canary request
    b, c = scenario.champion, scenario.candidate
    options = []

    def proportions(name: str, p_b: float, p_c: float) -> None:
        if p_b != p_c:
            variance = p_c * (1 - p_c) + p_b * (1 - p_b) / ratio
            options.append(PowerLimit(z * z * variance / (p_c - p_b) ** 2, name))

    proportions("error_rate", b.error_rate, c.error_rate)
    proportions("positive_rate", b.outcomes.positive_rate, c.outcomes.positive_rate)
    shift = math.log(c.latency.median) - math.log(b.latency.median)
    if shift:
        sigma2 = b.latency.sigma**2
        options.append(PowerLimit(z * z * sigma2 * (1 + 1 / ratio) / shift**2, "latency"))
    return min(options, key=lambda option: option.canary_requests) if options else None
