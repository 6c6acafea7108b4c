"""Unit tests of the anytime-valid comparison behind the judge (mlcanary.rollout.stats)."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcanary.rollout.stats import (
    MeanSummary,
    ProportionSummary,
    compare,
    compare_means_batch,
    compare_proportions_batch,
    compare_with_limit,
    exceedance_summary,
    ladder_half_width,
    log_latency_summary,
    mixture_half_width,
    tuned_tau2,
    two_sided_level,
)

ALPHA = 0.05


def _width(result: Any) -> float:
    return float(result.ci_high - result.ci_low)


def _cumulative_counts(
    rng: np.random.Generator, runs: int, looks: int, n_b: int, n_c: int, p_b: float, p_c: float
) -> tuple[np.ndarray, ...]:
    x_b = rng.binomial(n_b, p_b, (runs, looks)).cumsum(axis=1)
    x_c = rng.binomial(n_c, p_c, (runs, looks)).cumsum(axis=1)
    steps = np.arange(1, looks + 1)
    return np.broadcast_to(steps * n_b, x_b.shape), x_b, np.broadcast_to(steps * n_c, x_c.shape), x_c


def _cumulative_means(
    rng: np.random.Generator,
    runs: int,
    looks: int,
    n_b: int,
    n_c: int,
    delta: float,
    sd_b: float,
    sd_c: float,
) -> tuple[np.ndarray, ...]:
    """Cumulative (n, mean, variance) per arm of Gaussian data, via exact sufficient statistics per look."""
    arrays: list[np.ndarray] = []
    for k, mu, sd in ((n_b, 0.0, sd_b), (n_c, delta, sd_c)):
        means = rng.normal(mu, sd / math.sqrt(k), (runs, looks))
        within = sd * sd * rng.chisquare(k - 1, (runs, looks))
        n = k * np.arange(1, looks + 1)
        total = (k * means).cumsum(axis=1)
        total_sq = (within + k * means * means).cumsum(axis=1)
        mean = total / n
        arrays += [np.broadcast_to(n, mean.shape), mean, (total_sq - total * mean) / (n - 1)]
    return tuple(arrays)


COVERAGE_CASES = [
    pytest.param("proportion", {"n_b": 40, "n_c": 10, "p_b": 0.01, "p_c": 0.01}, id="aa-1pct-80-20"),
    pytest.param("proportion", {"n_b": 40, "n_c": 10, "p_b": 0.01, "p_c": 0.03}, id="1pct-vs-3pct"),
    pytest.param("proportion", {"n_b": 25, "n_c": 25, "p_b": 0.30, "p_c": 0.25}, id="30pct-vs-25pct-50-50"),
    pytest.param("mean", {"n_b": 40, "n_c": 10, "delta": 0.0, "sd_b": 0.5, "sd_c": 0.5}, id="aa-means"),
    pytest.param(
        "mean", {"n_b": 40, "n_c": 10, "delta": 0.2, "sd_b": 0.5, "sd_c": 1.0}, id="means-shift-unequal-sd"
    ),
]


@pytest.mark.parametrize(("kind", "case"), COVERAGE_CASES)
def test_confidence_sequence_covers_truth_at_every_look(kind: str, case: dict[str, float]) -> None:
    """Time-uniform coverage: over 500 seeded runs × 200 looks, each bound misses the truth at ANY look
    in at most α of runs (+3 s.e.), so the interval misses in at most α' = 2α/(1+α)."""
    runs, looks = 500, 200
    rng = np.random.default_rng(20240501)
    if kind == "proportion":
        n_b, x_b, n_c, x_c = _cumulative_counts(rng, runs, looks, **case)  # type: ignore[arg-type]
        result = compare_proportions_batch(n_b, x_b, n_c, x_c, direction="increase_is_bad", min_samples=0)
        truth = case["p_c"] - case["p_b"]
    else:
        arrays = _cumulative_means(rng, runs, looks, **case)  # type: ignore[arg-type]
        result = compare_means_batch(*arrays, direction="increase_is_bad", min_samples=0)
        truth = case["delta"]
    below = (result.ci_high < truth).any(axis=1).mean()
    above = (result.ci_low > truth).any(axis=1).mean()
    slack = 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert below <= ALPHA + slack
    assert above <= ALPHA + slack
    missed = ((result.ci_high < truth) | (result.ci_low > truth)).any(axis=1).mean()
    assert missed <= two_sided_level(ALPHA) + slack


@pytest.mark.parametrize(
    ("champion", "candidate"),
    [
        (ProportionSummary(5000, 50), ProportionSummary(5000, 50)),
        (ProportionSummary(0, 0), ProportionSummary(0, 0)),
        (MeanSummary(400, 3.9, 0.25), MeanSummary(400, 3.9, 0.25)),
    ],
)
def test_identical_arms_give_zero_estimate_and_no_evidence(
    champion: ProportionSummary | MeanSummary, candidate: ProportionSummary | MeanSummary
) -> None:
    result = compare(champion, candidate, direction="increase_is_bad", min_samples=0)
    assert result.estimate == 0.0
    assert result.ci_low < 0.0 < result.ci_high
    assert result.ci_low == pytest.approx(-result.ci_high)
    assert result.p_value == 1.0
    assert result.verdict == "inconclusive"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda n: (ProportionSummary(4 * n, 4 * n // 100), ProportionSummary(n, n // 100)), id="prop"
        ),
        pytest.param(lambda n: (MeanSummary(4 * n, 1.0, 0.3), MeanSummary(n, 1.0, 0.3)), id="mean"),
    ],
)
def test_width_shrinks_with_n(make: Any) -> None:
    widths = [_width(compare(*make(n), direction="increase_is_bad")) for n in (100, 1_000, 10_000, 100_000)]
    assert all(a > b for a, b in itertools.pairwise(widths))
    assert widths[-1] < 0.1 * widths[0]


VERDICT_CASES = [
    pytest.param(
        ProportionSummary(8000, 80),
        ProportionSummary(2000, 200),
        {"direction": "increase_is_bad"},
        "fail",
        id="errors-1pct-to-10pct",
    ),
    pytest.param(
        ProportionSummary(8000, 80),
        ProportionSummary(2000, 200),
        {"direction": "increase_is_bad", "tolerance": 0.05},
        "fail",
        id="errors-9pp-over-5pp-floor",
    ),
    pytest.param(
        ProportionSummary(8000, 80),
        ProportionSummary(2000, 200),
        {"direction": "increase_is_bad", "tolerance": 0.2},
        "pass",
        id="errors-9pp-under-20pp-floor",
    ),
    pytest.param(
        ProportionSummary(8000, 800),
        ProportionSummary(2000, 100),
        {"direction": "increase_is_bad", "tolerance": 0.01},
        "pass",
        id="errors-improve-10pct-to-5pct",
    ),
    pytest.param(
        ProportionSummary(8000, 800),
        ProportionSummary(2000, 100),
        {"direction": "increase_is_bad"},
        "pass",
        id="tolerance0-significant-improvement-passes",
    ),
    pytest.param(
        ProportionSummary(8000, 7200),
        ProportionSummary(2000, 1500),
        {"direction": "decrease_is_bad", "tolerance": 0.02},
        "fail",
        id="accuracy-90-to-75",
    ),
    pytest.param(
        ProportionSummary(8000, 7200),
        ProportionSummary(2000, 1860),
        {"direction": "decrease_is_bad", "tolerance": 0.02},
        "pass",
        id="accuracy-90-to-93",
    ),
    pytest.param(
        ProportionSummary(40, 0),
        ProportionSummary(10, 1),
        {"direction": "increase_is_bad", "min_samples": 0},
        "inconclusive",
        id="tiny-samples",
    ),
    pytest.param(
        MeanSummary(8000, math.log(50), 0.25, log_scale=True),
        MeanSummary(2000, math.log(80), 0.25, log_scale=True),
        {"direction": "increase_is_bad", "relative_tolerance": 0.1},
        "fail",
        id="latency-plus-60pct-over-10pct",
    ),
    pytest.param(
        MeanSummary(8000, math.log(50), 0.25, log_scale=True),
        MeanSummary(2000, math.log(50), 0.25, log_scale=True),
        {"direction": "increase_is_bad", "relative_tolerance": 0.1},
        "pass",
        id="latency-same-under-10pct",
    ),
    pytest.param(
        MeanSummary(8000, 0.90, 0.01),
        MeanSummary(2000, 0.80, 0.01),
        {"direction": "decrease_is_bad", "relative_tolerance": 0.05},
        "fail",
        id="linear-mean-minus-11pct-over-5pct",
    ),
]


@pytest.mark.parametrize(("champion", "candidate", "options", "expected"), VERDICT_CASES)
def test_verdicts(
    champion: ProportionSummary | MeanSummary,
    candidate: ProportionSummary | MeanSummary,
    options: dict[str, Any],
    expected: str,
) -> None:
    result = compare(champion, candidate, **options)
    assert result.verdict == expected, result
    assert (result.p_value <= ALPHA) == (expected != "inconclusive")
    assert result.n_champion == champion.n
    assert result.n_candidate == candidate.n


@pytest.mark.parametrize(("min_samples", "expected"), [(0, "fail"), (2000, "fail"), (2001, "inconclusive")])
def test_min_samples_is_honoured_per_arm(min_samples: int, expected: str) -> None:
    result = compare(
        ProportionSummary(8000, 80),
        ProportionSummary(2000, 200),
        direction="increase_is_bad",
        min_samples=min_samples,
    )
    assert result.verdict == expected
    assert result.ci_low > 0  # the interval is reported even when the verdict is withheld


def test_zero_events_give_finite_inconclusive_result_without_numeric_warnings() -> None:
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        result = compare(
            ProportionSummary(50, 0),
            ProportionSummary(10, 0),
            direction="increase_is_bad",
            tolerance=0.01,
            min_samples=0,
        )
    assert result.verdict == "inconclusive"
    assert result.estimate == 0.0
    numbers = (result.estimate, result.ci_low, result.ci_high, result.p_value)
    assert all(math.isfinite(x) for x in numbers)
    assert result.ci_low < 0 < result.ci_high


def test_zero_events_in_a_small_arm_do_not_prove_it_better() -> None:
    """Unregularised plug-in variance would call 0/300 'provably below 1 % + 0.5 pp' here."""
    result = compare(
        ProportionSummary(1200, 12), ProportionSummary(300, 0), direction="increase_is_bad", tolerance=0.005
    )
    assert result.verdict == "inconclusive"
    assert result.ci_high > 0.005


def test_relative_tolerance_margins() -> None:
    log_b = MeanSummary(1000, math.log(50), 0.25, log_scale=True)
    log_c = MeanSummary(1000, math.log(52), 0.25, log_scale=True)
    up = compare(log_b, log_c, direction="increase_is_bad", relative_tolerance=0.1)
    assert up.margin == pytest.approx(math.log(1.1))
    assert "+10% relative" in up.threshold
    down = compare(log_b, log_c, direction="decrease_is_bad", relative_tolerance=0.1)
    assert down.margin == pytest.approx(math.log(0.9))
    prop = compare(
        ProportionSummary(1000, 20),
        ProportionSummary(1000, 30),
        direction="increase_is_bad",
        relative_tolerance=0.5,
    )
    assert prop.margin == pytest.approx(0.01)
    assert prop.estimate == pytest.approx(0.01)
    assert prop.verdict == "inconclusive"
    combined = compare(
        ProportionSummary(1000, 20),
        ProportionSummary(1000, 30),
        direction="increase_is_bad",
        tolerance=0.002,
        relative_tolerance=0.5,
    )
    assert combined.margin == pytest.approx(0.012)
    assert "0.002 + 50% of the champion's value" in combined.threshold
    absolute = compare(
        ProportionSummary(1000, 20), ProportionSummary(1000, 30), direction="decrease_is_bad", tolerance=0.5
    )
    assert absolute.margin == -0.5


def test_result_names_test_threshold_and_values() -> None:
    result = compare(
        ProportionSummary(800, 8), ProportionSummary(200, 6), direction="increase_is_bad", tolerance=0.005
    )
    assert "mixture-SPRT" in result.test
    assert "proportions" in result.test
    assert "+0.005" in result.threshold
    assert result.champion_value == pytest.approx(0.01)
    assert result.candidate_value == pytest.approx(0.03)
    assert result.alpha == ALPHA


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ProportionSummary(-1, 0), "n must be >= 0"),
        (lambda: ProportionSummary(10, 11), "must not exceed"),
        (lambda: ProportionSummary(10, -1), "successes must be >= 0"),
        (lambda: ProportionSummary(10.5, 1), "integer"),  # type: ignore[arg-type]
        (lambda: MeanSummary(-3, 0.0, 1.0), "n must be >= 0"),
        (lambda: MeanSummary(3, 0.0, -1.0), "variance must be >= 0"),
        (lambda: MeanSummary(3, math.nan, 1.0), "finite"),
        (lambda: MeanSummary.from_sums(0, 1.0, 1.0), "sums must be 0"),
        (lambda: MeanSummary.from_values([1.0, math.inf]), "finite"),
        (lambda: log_latency_summary([10.0, -1.0]), ">= 0"),
        (lambda: exceedance_summary([1.0], math.nan), "finite"),
        (lambda: _cmp(alpha=0.0), "alpha must be in"),
        (lambda: _cmp(alpha=1.0), "alpha must be in"),
        (lambda: _cmp(alpha=math.nan), "finite"),
        (lambda: _cmp(tolerance=-0.01), "tolerance must be >= 0"),
        (lambda: _cmp(direction="up"), "direction must be"),
        (lambda: _cmp(min_samples=-1), "min_samples must be >= 0"),
        (lambda: _cmp(effect_size=0.0), "effect_size must be > 0"),
        (
            lambda: compare(ProportionSummary(1, 0), MeanSummary(2, 0.0, 1.0), direction="increase_is_bad"),
            "both",
        ),
        (
            lambda: compare(
                MeanSummary(5, 0.0, 1.0, log_scale=True),
                MeanSummary(5, 0.0, 1.0),
                direction="increase_is_bad",
            ),
            "log scale",
        ),
        (
            lambda: compare(
                MeanSummary(5, 0.0, 1.0, log_scale=True),
                MeanSummary(5, 0.0, 1.0, log_scale=True),
                direction="decrease_is_bad",
                relative_tolerance=1.0,
            ),
            "< 1",
        ),
        (lambda: compare_proportions_batch([10], [11], [10], [1], direction="increase_is_bad"), "exceed"),
    ],
)
def test_invalid_inputs_raise_value_error(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _cmp(**options: Any) -> Any:
    kwargs: dict[str, Any] = {"direction": "increase_is_bad", **options}
    return compare(ProportionSummary(100, 1), ProportionSummary(100, 2), **kwargs)


def test_summaries_from_sums_and_values_agree() -> None:
    values = np.random.default_rng(3).normal(4.0, 0.7, 257)
    direct = MeanSummary.from_values(values)
    via_sums = MeanSummary.from_sums(values.size, float(values.sum()), float((values * values).sum()))
    assert via_sums.n == direct.n == 257
    assert via_sums.mean == pytest.approx(direct.mean)
    assert via_sums.variance == pytest.approx(direct.variance, rel=1e-9)
    assert MeanSummary.from_sums(0, 0.0, 0.0) == MeanSummary(0, 0.0, 0.0)
    assert MeanSummary.from_sums(1, 5.0, 25.0).variance == 0.0
    assert MeanSummary.from_values([]) == MeanSummary(0, 0.0, 0.0)


def test_latency_helpers() -> None:
    latencies = [0.0, 10.0, 100.0, 1000.0]
    summary = log_latency_summary(latencies)
    assert summary.log_scale
    assert summary.n == 4
    assert summary.mean == pytest.approx(np.mean(np.log([1e-3, 10.0, 100.0, 1000.0])))
    assert exceedance_summary(latencies, 100.0) == ProportionSummary(4, 1)
    assert exceedance_summary([], 1.0) == ProportionSummary(0, 0)


def test_p95_check_through_exceedance() -> None:
    rng = np.random.default_rng(11)
    champion = rng.lognormal(math.log(50), 0.5, 20_000)
    threshold = float(np.quantile(champion, 0.95))
    same = compare(
        exceedance_summary(champion, threshold),
        exceedance_summary(rng.lognormal(math.log(50), 0.5, 5_000), threshold),
        direction="increase_is_bad",
    )
    slower = compare(
        exceedance_summary(champion, threshold),
        exceedance_summary(rng.lognormal(math.log(50), 0.7, 5_000), threshold),
        direction="increase_is_bad",
    )
    assert same.verdict != "fail"
    assert slower.verdict == "fail"


def test_tuned_tau2_reaches_the_effect_soonest() -> None:
    """Tuned τ² makes the half-width fall to δ at a larger Var(Δ̂) (fewer samples) than 3τ² or τ²/3."""
    effect, level = 0.02, two_sided_level(ALPHA)
    grid = np.geomspace(1e-7, 1e-3, 20_001)

    def first_variance_at_effect(tau2: float) -> float:
        return float(grid[mixture_half_width(grid, tau2, level) <= effect].max())

    tuned = tuned_tau2(effect, level)
    best = first_variance_at_effect(tuned)
    assert best > first_variance_at_effect(3 * tuned)
    assert best > first_variance_at_effect(tuned / 3)
    assert mixture_half_width(best, tuned, level) == pytest.approx(effect, rel=1e-3)


def test_two_sided_level() -> None:
    assert two_sided_level(0.05) == pytest.approx(0.1 / 1.05)
    with pytest.raises(ValueError, match="alpha"):
        two_sided_level(1.5)


proportions = st.integers(min_value=0, max_value=10**7).flatmap(
    lambda n: st.builds(ProportionSummary, st.just(n), st.integers(min_value=0, max_value=n))
)
means = st.builds(
    MeanSummary,
    st.integers(min_value=2, max_value=10**7),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
options = st.fixed_dictionaries(
    {
        "direction": st.sampled_from(["increase_is_bad", "decrease_is_bad"]),
        "tolerance": st.floats(min_value=0.0, max_value=0.9),
        "relative_tolerance": st.sampled_from([0.0, 0.1, 0.5]),
        "pass_relative_tolerance": st.sampled_from([None, 0.6, 0.9]),
        "alpha": st.floats(min_value=1e-4, max_value=0.5),
        "min_samples": st.integers(min_value=0, max_value=100),
    }
)


def _check_result(result: Any) -> None:
    numbers = (result.estimate, result.ci_low, result.ci_high, result.p_value, result.margin)
    assert all(math.isfinite(x) for x in numbers), result
    assert result.ci_low <= result.estimate <= result.ci_high
    assert 0.0 <= result.p_value <= 1.0


@settings(max_examples=300, deadline=None)
@given(champion=proportions, candidate=proportions, opts=options)
def test_property_proportions_finite_and_ordered(
    champion: ProportionSummary, candidate: ProportionSummary, opts: dict[str, Any]
) -> None:
    result = compare(champion, candidate, **opts)
    _check_result(result)
    assert -1.0 <= result.ci_low <= result.ci_high <= 1.0
    _check_batch_matches(
        result,
        compare_proportions_batch(champion.n, champion.successes, candidate.n, candidate.successes, **opts),
    )


@settings(max_examples=300, deadline=None)
@given(champion=means, candidate=means, opts=options)
def test_property_means_finite_and_ordered(
    champion: MeanSummary, candidate: MeanSummary, opts: dict[str, Any]
) -> None:
    result = compare(champion, candidate, **opts)
    _check_result(result)
    batch = compare_means_batch(
        champion.n, champion.mean, champion.variance, candidate.n, candidate.mean, candidate.variance, **opts
    )
    _check_batch_matches(result, batch)


def _check_batch_matches(result: Any, batch: Any) -> None:
    assert str(batch.verdicts) == result.verdict
    assert float(batch.ci_low) == result.ci_low
    assert float(batch.ci_high) == result.ci_high
    increase = result.threshold.startswith("fail if ci_low")
    fail = result.ci_low > result.margin if increase else result.ci_high < result.margin
    passed = result.pass_bound < result.pass_margin if increase else result.pass_bound > result.pass_margin
    assert float(batch.pass_bound) == result.pass_bound
    clipped = "proportions" in result.test and (result.ci_low == -1.0 or result.ci_high == 1.0)
    if result.verdict != "inconclusive" and not clipped:  # the documented exception
        assert result.p_value <= result.alpha * (1 + 1e-9)
    if result.verdict == "fail":
        assert fail
    elif result.verdict == "pass":
        assert passed
    elif result.n_champion >= 100 and result.n_candidate >= 100:
        assert not fail
        assert not passed


def test_ladder_costs_little_at_the_tuned_effect_and_resolves_gross_harm_early() -> None:
    level = two_sided_level(0.01)
    tau2 = tuned_tau2(0.01, level)
    small_v, large_v = 1e-6, 2e-3  # thousands of observations; about a hundred at a 40 % rate
    assert ladder_half_width(small_v, tau2, level) == pytest.approx(
        mixture_half_width(small_v, tau2, level), rel=0.1
    )
    assert ladder_half_width(large_v, tau2, level) < mixture_half_width(large_v, tau2, level) / 3


def test_gross_harm_fails_at_small_samples_even_when_tuned_for_a_small_effect() -> None:
    """48 5xx in 120 candidate requests vs 2 in 150: a single τ tuned for one point cannot tell yet."""
    result = compare(
        ProportionSummary(150, 2),
        ProportionSummary(120, 48),
        direction="increase_is_bad",
        tolerance=0.002,
        alpha=0.01,
        effect_size=0.01,
    )
    assert result.verdict == "fail"
    level = two_sided_level(0.01)
    single = mixture_half_width(result.estimate**2 / 50, tuned_tau2(0.01, level), level)
    assert single > result.estimate  # the ladder is what makes it decisive


@pytest.mark.parametrize(
    ("agree", "expected"), [(1000, "pass"), (950, "pass"), (900, "inconclusive"), (850, "fail"), (0, "fail")]
)
def test_one_proportion_against_a_limit(agree: int, expected: str) -> None:
    result = compare_with_limit(ProportionSummary(1000, agree), 0.9, direction="decrease_is_bad", alpha=0.01)
    assert result.verdict == expected
    assert result.ci_low <= result.estimate <= result.ci_high
    assert result.estimate == pytest.approx(agree / 1000 - 0.9)


def test_one_proportion_is_inconclusive_below_its_sample_floor() -> None:
    result = compare_with_limit(ProportionSummary(50, 0), 0.9, direction="decrease_is_bad", min_samples=100)
    assert result.verdict == "inconclusive"
    with pytest.raises(ValueError, match="limit"):
        compare_with_limit(ProportionSummary(50, 0), 1.5, direction="decrease_is_bad")


def test_a_wider_pass_margin_lets_an_equal_candidate_pass_while_harm_still_fails_early() -> None:
    equal = (ProportionSummary(40_000, 400), ProportionSummary(10_000, 100))
    harm = (ProportionSummary(4_000, 40), ProportionSummary(1_000, 30))
    tight = {"direction": "increase_is_bad", "tolerance": 0.001, "relative_tolerance": 0.1}
    assert compare(*equal, **tight).verdict == "inconclusive"
    wide = {**tight, "pass_tolerance": 0.002, "pass_relative_tolerance": 0.5}
    passed = compare(*equal, **wide)
    assert passed.verdict == "pass"
    assert passed.pass_margin == pytest.approx(0.002 + 0.5 * 0.01)
    assert passed.pass_bound < passed.pass_margin
    assert passed.p_value <= 0.05
    assert compare(*harm, **wide, effect_size=0.018).verdict == "fail"  # tuned to detect 1 % → 3 %
    with pytest.raises(ValueError, match="pass margin"):
        compare(*equal, **{**tight, "pass_relative_tolerance": 0.05})
