"""Deterministic generator of card-transaction data with a fraud label.

The demo and the benchmarks need realistic tabular traffic that can be made to drift on purpose, with
no download at run time. Rows look like card transactions (amount, merchant category, channel,
distances, velocity, customer and account age); the label ``is_fraud`` comes from a fixed logistic
"true" model of those features, so:

* ``covariate_shift`` moves P(x) (larger amounts, farther from home, more online and night-time
  purchases, younger accounts) while P(y | x) stays the same: fraud rises only as much as the features
  say it should;
* ``fraud_rate`` sets the prior (label or prior shift when it differs from the training data's);
* ``noise`` flips that share of labels at random (annotation noise) and jitters numeric features.

The same ``(n_rows, seed, knobs)`` always gives the same frame, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

TARGET = "is_fraud"

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "gas_station",
    "restaurant",
    "online_retail",
    "travel",
    "electronics",
    "entertainment",
    "health",
)
_MERCHANT_P = np.array([0.24, 0.14, 0.16, 0.16, 0.06, 0.07, 0.09, 0.08])
# Fraud propensity by merchant category, in logit units.
_MERCHANT_RISK = np.array([-0.4, -0.2, -0.5, 0.6, 0.7, 0.9, 0.1, -0.6])

CHANNELS: tuple[str, ...] = ("chip", "contactless", "online", "swipe")
_CHANNEL_P = np.array([0.42, 0.25, 0.25, 0.08])
_CHANNEL_RISK = np.array([-0.7, -0.5, 0.8, 0.6])

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "amount": "transaction amount in USD",
    "hour": "local hour of the transaction, 0-23",
    "merchant_category": "merchant category code group",
    "channel": "how the card was presented: chip, contactless, online or swipe",
    "distance_from_home_km": "distance between the merchant and the cardholder's home",
    "distance_from_last_txn_km": "distance from the previous transaction on the card",
    "ratio_to_median_amount": "amount divided by the cardholder's median purchase",
    "txn_count_24h": "transactions on the card in the previous 24 hours",
    "customer_age": "cardholder age in years",
    "account_age_days": "days since the card account was opened",
    "foreign_transaction": "1 if the merchant is in another country than the card's",
    "pin_used": "1 if a PIN was entered",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DESCRIPTIONS)
CATEGORICAL_FEATURES: tuple[str, ...] = ("merchant_category", "channel")
NUMERIC_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f not in CATEGORICAL_FEATURES)


@dataclass(frozen=True)
class DriftKnobs:
    """How far generated traffic departs from the training population.

    ``covariate_shift`` is in standard deviations of the features it moves (0 = none, 1 = strong);
    ``fraud_rate`` is the share of fraud before label noise; ``noise`` is the share of labels flipped
    at random (and the relative jitter added to numeric features).
    """

    covariate_shift: float = 0.0
    fraud_rate: float = 0.04
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.covariate_shift <= 5.0:
            raise ValueError(f"covariate_shift must be within [0, 5], got {self.covariate_shift}")
        if not 0.0 < self.fraud_rate < 1.0:
            raise ValueError(f"fraud_rate must be within (0, 1), got {self.fraud_rate}")
        if not 0.0 <= self.noise <= 0.5:
            raise ValueError(f"noise must be within [0, 0.5], got {self.noise}")


def _features(n_rows: int, rng: np.random.Generator, shift: float) -> pd.DataFrame:
    merchant_idx = rng.choice(len(MERCHANT_CATEGORIES), size=n_rows, p=_MERCHANT_P)
    channel_p = _CHANNEL_P.copy()
    # Covariate shift moves purchases online (e.g. a new market or a marketing campaign).
    channel_p[2] += 0.15 * shift
    channel_p /= channel_p.sum()
    channel_idx = rng.choice(len(CHANNELS), size=n_rows, p=channel_p)

    # Hours follow a daily cycle; shift pushes mass into the night.
    day_hour = rng.normal(14.0 - 2.5 * shift, 4.0, size=n_rows)
    hour = np.mod(np.rint(day_hour), 24).astype(int)

    median_amount = rng.lognormal(mean=3.6, sigma=0.5, size=n_rows)
    ratio = rng.lognormal(mean=0.0 + 0.35 * shift, sigma=0.6, size=n_rows)
    amount = np.round(median_amount * ratio, 2)

    distance_home = rng.lognormal(mean=2.0 + 0.6 * shift, sigma=1.1, size=n_rows)
    distance_last = rng.lognormal(mean=1.5 + 0.5 * shift, sigma=1.3, size=n_rows)
    txn_count = rng.poisson(lam=3.0 + 1.0 * shift, size=n_rows)
    customer_age = np.clip(rng.normal(45.0 - 3.0 * shift, 15.0, size=n_rows), 18, 95).astype(int)
    account_age = np.clip(rng.exponential(scale=1400.0 / (1.0 + shift), size=n_rows), 1, 365 * 40).astype(int)
    foreign = (rng.random(n_rows) < 0.05 + 0.05 * shift).astype(int)
    in_person = np.isin(channel_idx, [0, 1, 3])
    pin_used = ((rng.random(n_rows) < 0.55) & in_person).astype(int)

    return pd.DataFrame(
        {
            "amount": amount,
            "hour": hour,
            "merchant_category": np.asarray(MERCHANT_CATEGORIES, dtype=object)[merchant_idx],
            "channel": np.asarray(CHANNELS, dtype=object)[channel_idx],
            "distance_from_home_km": np.round(distance_home, 3),
            "distance_from_last_txn_km": np.round(distance_last, 3),
            "ratio_to_median_amount": np.round(ratio, 4),
            "txn_count_24h": txn_count,
            "customer_age": customer_age,
            "account_age_days": account_age,
            "foreign_transaction": foreign,
            "pin_used": pin_used,
        }
    )


def _risk_score(frame: pd.DataFrame) -> np.ndarray:
    """The fixed 'true' fraud logit of a row, before the intercept."""
    merchant_risk = dict(zip(MERCHANT_CATEGORIES, _MERCHANT_RISK, strict=True))
    channel_risk = dict(zip(CHANNELS, _CHANNEL_RISK, strict=True))
    night = ((frame["hour"] <= 4) | (frame["hour"] >= 23)).to_numpy(dtype=float)
    return (
        1.1 * np.log(frame["ratio_to_median_amount"].to_numpy())
        + 0.55 * np.log1p(frame["distance_from_home_km"].to_numpy() / 25.0)
        + 0.25 * np.log1p(frame["distance_from_last_txn_km"].to_numpy() / 25.0)
        + 0.18 * frame["txn_count_24h"].to_numpy()
        + 1.2 * frame["foreign_transaction"].to_numpy()
        - 1.3 * frame["pin_used"].to_numpy()
        + 0.9 * night
        - 0.35 * np.log1p(frame["account_age_days"].to_numpy() / 90.0)
        + frame["merchant_category"].map(merchant_risk).to_numpy(dtype=float)
        + frame["channel"].map(channel_risk).to_numpy(dtype=float)
    )


@lru_cache(maxsize=32)
def _intercept_for(fraud_rate: float) -> float:
    """Intercept giving ``fraud_rate`` on the unshifted population (fixed, seed-independent draw)."""
    scores = _risk_score(_features(50_000, np.random.default_rng(20_240_601), 0.0))
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(scores + mid)))))
        if rate < fraud_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def generate_transactions(n_rows: int, *, seed: int = 0, knobs: DriftKnobs | None = None) -> pd.DataFrame:
    """Return ``n_rows`` card transactions with the label column ``is_fraud`` (0/1).

    Deterministic in ``(n_rows, seed, knobs)``. Raises ``ValueError`` for a non-positive row count.
    """
    if n_rows <= 0:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    knobs = knobs or DriftKnobs()
    rng = np.random.default_rng(seed)
    frame = _features(n_rows, rng, knobs.covariate_shift)
    logit = _risk_score(frame) + _intercept_for(knobs.fraud_rate)
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    if knobs.noise > 0:
        flip = rng.random(n_rows) < knobs.noise
        label = np.where(flip, 1 - label, label)
        for column in ("amount", "distance_from_home_km", "distance_from_last_txn_km"):
            jitter = rng.normal(1.0, knobs.noise, size=n_rows).clip(0.05, None)
            frame[column] = np.round(frame[column].to_numpy() * jitter, 3)
    frame[TARGET] = label
    return frame
