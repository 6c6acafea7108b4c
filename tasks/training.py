"""Prefect tasks of the training flow, one per step of ``mlcanary.training``.

Reads from outside systems (the data file, the registry) retry on I/O errors; CPU steps do not
retry; registering a version is not idempotent, so it never retries (a retry could register twice).
Inputs are large (DataFrames, models), so no task caches on its inputs.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlcanary import training
from mlcanary.config import Settings
from mlcanary.data.loader import Dataset, load_dataset
from mlcanary.registry.protocol import ModelRegistry, NewVersion
from mlcanary.rollout.versions import ModelVersionInfo
from tasks.retry import retry_on_io


def artifact_key(prefix: str, model: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    return f"{prefix}-" + re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")


IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": retry_on_io}


@task(name="load-data", cache_policy=NO_CACHE, **IO_RETRIES)
def load_data(settings: Settings) -> Dataset:
    dataset = load_dataset(settings.data)
    get_run_logger().info(
        "loaded %s rows from %s (fingerprint %s)", len(dataset.frame), dataset.source, dataset.fingerprint
    )
    return dataset


@task(name="split-data", cache_policy=NO_CACHE)
def split_data(settings: Settings, dataset: Dataset) -> training.Split:
    return training.split_dataset(dataset, test_size=settings.training.test_size, seed=settings.training.seed)


@task(name="fit-model", cache_policy=NO_CACHE)
def fit_model(settings: Settings, dataset: Dataset, train: pd.DataFrame) -> Any:
    return training.fit_model(settings, dataset, train)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(
    settings: Settings, model: Any, dataset: Dataset, holdout: pd.DataFrame
) -> dict[str, float]:
    metrics = training.evaluate(
        model,
        holdout[dataset.feature_names],
        holdout[dataset.target],
        threshold=settings.training.decision_threshold,
    )
    metric = settings.training.primary_metric
    get_run_logger().info("holdout %s: %.4f", metric, metrics[metric])
    return metrics


@task(name="score-champion", cache_policy=NO_CACHE, **IO_RETRIES)
def score_champion(
    settings: Settings, registry: ModelRegistry, dataset: Dataset, holdout: pd.DataFrame
) -> training.ChampionScore | None:
    score = training.score_champion(
        registry,
        settings.model.name,
        holdout,
        dataset.target,
        threshold=settings.training.decision_threshold,
    )
    logger = get_run_logger()
    if score is None:
        logger.info("no @champion yet: this version will be the first")
    elif score.error:
        logger.warning("champion v%s could not be scored: %s", score.version, score.error)
    return score


@task(name="offline-gate", cache_policy=NO_CACHE)
def offline_gate(
    settings: Settings, metrics: dict[str, float], champion: training.ChampionScore | None
) -> training.GateResult:
    gate = training.offline_gate(
        settings.training.primary_metric, metrics, champion, settings.training.gate_tolerance
    )
    get_run_logger().info("offline gate: %s: %s", gate.outcome, gate.reason)
    return gate


@task(name="register-version", cache_policy=NO_CACHE)
def register_version(settings: Settings, registry: ModelRegistry, new: NewVersion) -> ModelVersionInfo:
    version = registry.register(settings.model.name, new)
    get_run_logger().info("registered %s version %s", version.name, version.version)
    return version


@task(name="assign-alias", cache_policy=NO_CACHE, **IO_RETRIES)
def assign_alias(
    settings: Settings, registry: ModelRegistry, version: ModelVersionInfo, gate: training.GateResult
) -> tuple[str | None, str]:
    alias, reason = training.assign_alias(
        registry, version, gate, replace_candidate=settings.training.replace_candidate
    )
    get_run_logger().info("%s version %s: %s", version.name, version.version, reason)
    return alias, reason
