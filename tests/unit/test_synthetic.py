"""The bundled transaction generator: determinism, schema, and the drift knobs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlcanary.data.synthetic import (
    CATEGORICAL_FEATURES,
    CHANNELS,
    FEATURES,
    MERCHANT_CATEGORIES,
    NUMERIC_FEATURES,
    TARGET,
    DriftKnobs,
    _intercept_for,
    _risk_score,
    generate_transactions,
)

N = 20_000


def _tolerance(p: float, n: int, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_transactions(N, seed=123)


# -- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [None, DriftKnobs(covariate_shift=1.5), DriftKnobs(fraud_rate=0.2, noise=0.1)],
    ids=["default", "shift", "rate+noise"],
)
def test_same_seed_same_frame(knobs: DriftKnobs | None) -> None:
    first = generate_transactions(3_000, seed=7, knobs=knobs)
    second = generate_transactions(3_000, seed=7, knobs=knobs)
    pd.testing.assert_frame_equal(first, second)


def test_different_seed_different_frame() -> None:
    a = generate_transactions(3_000, seed=1)
    b = generate_transactions(3_000, seed=2)
    assert not a.equals(b)
    assert not np.array_equal(a["amount"].to_numpy(), b["amount"].to_numpy())


def test_zero_shift_equals_default_knobs() -> None:
    pd.testing.assert_frame_equal(
        generate_transactions(2_000, seed=5, knobs=DriftKnobs(covariate_shift=0.0)),
        generate_transactions(2_000, seed=5),
    )


def test_generation_leaves_global_numpy_state_alone() -> None:
    np.random.seed(0)
    expected = np.random.random(3)
    np.random.seed(0)
    generate_transactions(500, seed=9)
    np.testing.assert_array_equal(np.random.random(3), expected)


# -- schema ----------------------------------------------------------------------------------------


def test_columns_are_features_then_target(base: pd.DataFrame) -> None:
    assert list(base.columns) == [*FEATURES, TARGET]
    assert set(CATEGORICAL_FEATURES) | set(NUMERIC_FEATURES) == set(FEATURES)
    assert not set(CATEGORICAL_FEATURES) & set(NUMERIC_FEATURES)
    assert len(base) == N
    assert base.notna().all().all()


@pytest.mark.parametrize("n_rows", [1, 2, 17])
def test_row_count_is_exact(n_rows: int) -> None:
    assert len(generate_transactions(n_rows, seed=0)) == n_rows


def test_numeric_features_are_numeric(base: pd.DataFrame) -> None:
    for column in NUMERIC_FEATURES:
        assert pd.api.types.is_numeric_dtype(base[column]), column
        assert np.isfinite(base[column].to_numpy()).all(), column


@pytest.mark.parametrize(
    ("column", "allowed"),
    [("merchant_category", MERCHANT_CATEGORIES), ("channel", CHANNELS)],
)
def test_categories_come_from_the_declared_sets(base: pd.DataFrame, column: str, allowed: tuple) -> None:
    values = set(base[column].unique())
    assert values <= set(allowed)
    assert len(values) == len(allowed)  # 20k rows see every category
    assert all(isinstance(v, str) for v in values)


@pytest.mark.parametrize(
    ("column", "low", "high", "integral"),
    [
        ("hour", 0, 23, True),
        ("txn_count_24h", 0, None, True),
        ("customer_age", 18, 95, True),
        ("account_age_days", 1, 365 * 40, True),
        ("foreign_transaction", 0, 1, True),
        ("pin_used", 0, 1, True),
        (TARGET, 0, 1, True),
        ("amount", 0, None, False),
        ("distance_from_home_km", 0, None, False),
        ("distance_from_last_txn_km", 0, None, False),
        ("ratio_to_median_amount", 0, None, False),
    ],
)
def test_value_ranges(
    base: pd.DataFrame, column: str, low: float, high: float | None, integral: bool
) -> None:
    values = base[column]
    if integral:
        assert pd.api.types.is_integer_dtype(values), column
        assert values.min() >= low
    else:
        assert pd.api.types.is_float_dtype(values), column
        assert values.min() > low
    if high is not None:
        assert values.max() <= high


def test_hour_covers_the_whole_day(base: pd.DataFrame) -> None:
    assert set(base["hour"].unique()) == set(range(24))


@pytest.mark.parametrize("column", ["foreign_transaction", "pin_used", TARGET])
def test_binary_columns_take_both_values(base: pd.DataFrame, column: str) -> None:
    assert set(base[column].unique()) == {0, 1}


def test_pin_only_in_person(base: pd.DataFrame) -> None:
    assert (base.loc[base["channel"] == "online", "pin_used"] == 0).all()


# -- fraud_rate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraud_rate", [0.02, 0.04, 0.15])
def test_fraud_rate_knob_sets_the_label_rate(fraud_rate: float) -> None:
    n = 40_000
    frame = generate_transactions(n, seed=31, knobs=DriftKnobs(fraud_rate=fraud_rate))
    assert abs(frame[TARGET].mean() - fraud_rate) <= _tolerance(fraud_rate, n)


def test_default_fraud_rate_is_four_percent(base: pd.DataFrame) -> None:
    assert abs(base[TARGET].mean() - DriftKnobs().fraud_rate) <= _tolerance(DriftKnobs().fraud_rate, N)


def test_label_depends_on_features(base: pd.DataFrame) -> None:
    # The label comes from a model of the features, not a coin: risky rows are fraud more often.
    online = base.loc[base["channel"] == "online", TARGET].mean()
    chip = base.loc[base["channel"] == "chip", TARGET].mean()
    foreign = base.loc[base["foreign_transaction"] == 1, TARGET].mean()
    domestic = base.loc[base["foreign_transaction"] == 0, TARGET].mean()
    assert online > 2 * chip
    assert foreign > 2 * domestic


# -- covariate_shift -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    return generate_transactions(N, seed=123, knobs=DriftKnobs(covariate_shift=1.0))


@pytest.mark.parametrize("column", ["amount", "distance_from_home_km", "txn_count_24h"])
def test_shift_raises_the_median(base: pd.DataFrame, shifted: pd.DataFrame, column: str) -> None:
    assert shifted[column].median() > base[column].median()


def test_shift_lowers_account_age(base: pd.DataFrame, shifted: pd.DataFrame) -> None:
    assert shifted["account_age_days"].median() < base["account_age_days"].median()


def test_shift_moves_purchases_online(base: pd.DataFrame, shifted: pd.DataFrame) -> None:
    base_online = (base["channel"] == "online").mean()
    shifted_online = (shifted["channel"] == "online").mean()
    assert shifted_online - base_online > _tolerance(base_online, N)


def test_shift_is_monotone_in_strength() -> None:
    medians = [
        generate_transactions(10_000, seed=4, knobs=DriftKnobs(covariate_shift=s))["amount"].median()
        for s in (0.0, 0.5, 1.0, 2.0)
    ]
    assert medians == sorted(medians)
    assert len(set(medians)) == len(medians)


def test_shift_raises_fraud_through_the_features_only(base: pd.DataFrame, shifted: pd.DataFrame) -> None:
    # P(y | x) is fixed, so riskier features mean more fraud (the prior is not re-normalised).
    assert shifted[TARGET].mean() - base[TARGET].mean() > _tolerance(base[TARGET].mean(), N)


@pytest.mark.parametrize("shift", [0.0, 1.0, 2.5])
def test_labels_follow_the_same_true_model_under_shift(shift: float) -> None:
    # Calibration of the labels against the generator's fixed "true" model (private helpers): if the
    # label mechanism depended on the shift (e.g. a re-fitted intercept), the shifted labels would
    # no longer match the unshifted model's probabilities, overall or within low / high-risk halves.
    frame = generate_transactions(40_000, seed=19, knobs=DriftKnobs(covariate_shift=shift))
    logit = _risk_score(frame) + _intercept_for(DriftKnobs().fraud_rate)
    probability = 1.0 / (1.0 + np.exp(-logit))
    labels = frame[TARGET].to_numpy()
    median = np.median(probability)
    for mask in (np.ones(len(frame), bool), probability <= median, probability > median):
        p = probability[mask]
        sigma = math.sqrt(float(np.sum(p * (1 - p)))) / len(p)
        assert abs(labels[mask].mean() - p.mean()) <= 5 * sigma


# -- noise -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.1, 0.3, 0.5])
def test_noise_flips_labels_at_the_requested_share(noise: float) -> None:
    n = 40_000
    clean_rate = generate_transactions(n, seed=77)[TARGET].mean()
    noisy_rate = generate_transactions(n, seed=78, knobs=DriftKnobs(noise=noise))[TARGET].mean()
    # Flipping a share `noise` of labels turns a rate r into r(1 - noise) + (1 - r) noise.
    expected = clean_rate * (1 - noise) + (1 - clean_rate) * noise
    assert abs(noisy_rate - expected) <= _tolerance(expected, n) + _tolerance(clean_rate, n)


def test_half_noise_makes_labels_a_coin_flip() -> None:
    n = 40_000
    rate = generate_transactions(n, seed=5, knobs=DriftKnobs(noise=0.5))[TARGET].mean()
    assert abs(rate - 0.5) <= _tolerance(0.5, n)


def test_noise_jitters_numeric_features_but_keeps_them_positive() -> None:
    clean = generate_transactions(5_000, seed=3)
    noisy = generate_transactions(5_000, seed=3, knobs=DriftKnobs(noise=0.3))
    assert (noisy["amount"] > 0).all()
    assert not np.allclose(noisy["amount"].to_numpy(), clean["amount"].to_numpy())


# -- invalid knobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"covariate_shift": -0.1}, "covariate_shift"),
        ({"covariate_shift": 5.1}, "covariate_shift"),
        ({"covariate_shift": float("nan")}, "covariate_shift"),
        ({"fraud_rate": 0.0}, "fraud_rate"),
        ({"fraud_rate": 1.0}, "fraud_rate"),
        ({"fraud_rate": -0.2}, "fraud_rate"),
        ({"noise": 0.51}, "noise"),
        ({"noise": -0.01}, "noise"),
    ],
)
def test_invalid_knobs_raise_value_error(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        DriftKnobs(**kwargs)


@pytest.mark.parametrize("n_rows", [0, -1, -1000])
def test_non_positive_row_count_raises(n_rows: int) -> None:
    with pytest.raises(ValueError, match="n_rows"):
        generate_transactions(n_rows, seed=0)


@pytest.mark.parametrize(
    "kwargs", [{"covariate_shift": 0.0}, {"covariate_shift": 5.0}, {"noise": 0.0}, {"noise": 0.5}]
)
def test_boundary_knobs_are_accepted(kwargs: dict[str, float]) -> None:
    frame = generate_transactions(300, seed=0, knobs=DriftKnobs(**kwargs))
    assert len(frame) == 300
