"""Training: split → fit → evaluate → compare with ``@champion`` → register → assign an alias.

The steps are plain functions so the Prefect flow (``flows/train.py``) can wrap each one in a task
and the CLI can run them in a row (:func:`train`). The offline gate is pure.

Aliases after a run:
* no ``@champion`` yet → the new version becomes ``@champion``;
* the gate passes → ``@candidate`` (unless a canary already holds ``@candidate`` and
  ``replace_candidate`` is false: then the version is kept, tagged, and the reason says why);
* the gate fails → no alias; the version is tagged ``mlcanary.rejected`` with the reason.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from mlcanary.config import Metric, Settings
from mlcanary.data.loader import DataError, Dataset, load_dataset
from mlcanary.registry.protocol import ModelRegistry, NewVersion
from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.versions import ModelVersionInfo

LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss"})
GateOutcome = Literal["first_version", "passed", "failed"]


class TrainingError(Exception):
    """Training cannot go on; the message says why (bad factory, unusable split, ...)."""


@dataclass(frozen=True)
class Split:
    """Train and holdout rows of one dataset (stratified on the target)."""

    train: pd.DataFrame
    holdout: pd.DataFrame


@dataclass(frozen=True)
class ChampionScore:
    """The current ``@champion`` evaluated on the candidate's holdout (``error`` if it could not be)."""

    version: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class GateResult:
    """The offline gate's verdict, with the numbers behind it."""

    outcome: GateOutcome
    metric: str
    candidate_value: float
    champion_value: float | None
    tolerance: float
    reason: str

    @property
    def passed(self) -> bool:
        return self.outcome != "failed"


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run did, and why: the flow's return value and the CLI's report."""

    model: str
    version: str
    alias: str | None
    gate: GateResult
    metrics: Mapping[str, float]
    champion_version: str | None
    champion_metrics: Mapping[str, float] | None
    data_fingerprint: str
    data_source: str
    git_commit: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        where = f"@{self.alias}" if self.alias else "no alias"
        return f"{self.model} version {self.version} → {where}: {self.reason}"


# -- steps ---------------------------------------------------------------------------------------


def split_dataset(dataset: Dataset, *, test_size: float, seed: int) -> Split:
    """Stratified split; raises :class:`DataError` when a class is too rare to appear in both parts."""
    counts = dataset.y.value_counts()
    if len(counts) < 2:
        raise DataError(f"{dataset.source}: the target has a single class ({counts.index[0]}); need 0 and 1")
    if counts.min() < 2:
        raise DataError(f"{dataset.source}: class {counts.idxmin()} has only {counts.min()} row(s)")
    n_holdout = round(len(dataset.frame) * test_size)
    if n_holdout < 2 or len(dataset.frame) - n_holdout < 2:
        raise DataError(f"{dataset.source}: {len(dataset.frame)} rows are too few for test_size {test_size}")
    train, holdout = train_test_split(
        dataset.frame, test_size=test_size, random_state=seed, stratify=dataset.y
    )
    return Split(train=train.reset_index(drop=True), holdout=holdout.reset_index(drop=True))


def load_factory(dotted: str) -> Callable[..., Any]:
    """Import ``module:function``; raises :class:`TrainingError` naming what is missing."""
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainingError(f"model.factory {dotted!r}: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TrainingError(f"model.factory {dotted!r}: {module_name} has no function {attr!r}")
    return factory


def fit_model(settings: Settings, dataset: Dataset, train: pd.DataFrame) -> Any:
    """Build the configured pipeline and fit it on ``train``."""
    factory = load_factory(settings.model.factory)
    numeric = [f.name for f in dataset.features if f.kind == "numeric"]
    categorical = [f.name for f in dataset.features if f.kind == "categorical"]
    try:
        pipeline = factory(
            settings.model.estimator,
            settings.model.params,
            numeric=numeric,
            categorical=categorical,
            seed=settings.training.seed,
        )
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"model: {exc}") from None
    return pipeline.fit(train[dataset.feature_names], train[dataset.target])


def evaluate(model: Any, x: pd.DataFrame, y: pd.Series, *, threshold: float) -> dict[str, float]:
    """Holdout metrics of a binary classifier with ``predict_proba``."""
    proba = np.asarray(model.predict_proba(x))[:, 1]
    labels = (proba >= threshold).astype(int)
    truth = y.to_numpy()
    return {
        "roc_auc": float(skm.roc_auc_score(truth, proba)),
        "average_precision": float(skm.average_precision_score(truth, proba)),
        "f1": float(skm.f1_score(truth, labels, zero_division=0)),
        "precision": float(skm.precision_score(truth, labels, zero_division=0)),
        "recall": float(skm.recall_score(truth, labels, zero_division=0)),
        "accuracy": float(skm.accuracy_score(truth, labels)),
        "log_loss": float(skm.log_loss(truth, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "positive_rate": float(labels.mean()),
        "holdout_rows": float(len(truth)),
    }


def score_champion(
    registry: ModelRegistry, name: str, holdout: pd.DataFrame, target: str, *, threshold: float
) -> ChampionScore | None:
    """Evaluate ``@champion`` on ``holdout``; None when the model has no champion yet."""
    if not registry.model_exists(name):
        return None
    champion = registry.version_for_alias(name, CHAMPION)
    if champion is None:
        return None
    loaded = registry.load_model(name, champion.version)
    needed = [f.name for f in loaded.features]
    missing = [c for c in needed if c not in holdout.columns]
    if missing:
        return ChampionScore(
            champion.version, error=f"its features are missing from this data: {', '.join(missing)}"
        )
    try:
        scores = evaluate(loaded.model, holdout[needed], holdout[target], threshold=threshold)
    except Exception as exc:  # the champion's own code failing is a verdict, not a crash
        return ChampionScore(champion.version, error=f"it failed to predict: {type(exc).__name__}: {exc}")
    return ChampionScore(champion.version, scores)


def offline_gate(
    metric: Metric, candidate: Mapping[str, float], champion: ChampionScore | None, tolerance: float
) -> GateResult:
    """Pure: does the new version deserve a canary?

    It passes when its ``metric`` is not worse than the champion's by more than ``tolerance``
    (absolute; for log_loss lower is better). With no champion it is the first version.
    A champion that could not be scored fails the gate: without a comparison nothing is proven.
    """
    value = float(candidate[metric])
    if champion is None:
        return GateResult(
            "first_version", metric, value, None, tolerance, f"first version: {metric} {value:.4f}"
        )
    if champion.error is not None:
        return GateResult(
            "failed",
            metric,
            value,
            None,
            tolerance,
            f"champion v{champion.version} could not be scored on this holdout: {champion.error}",
        )
    best = float(champion.metrics[metric])
    shortfall = value - best if metric in LOWER_IS_BETTER else best - value
    comparison = (
        f"{metric} {value:.4f} vs champion v{champion.version} {best:.4f} "
        f"(Δ {value - best:+.4f}, tolerance {tolerance})"
    )
    if shortfall > tolerance + 1e-12:
        return GateResult("failed", metric, value, best, tolerance, f"worse than the champion: {comparison}")
    return GateResult("passed", metric, value, best, tolerance, f"passed the offline gate: {comparison}")


def git_commit(cwd: Path | None = None) -> str:
    """The current git commit (``+dirty`` if the work tree has changes), or ``unknown``."""
    if os.environ.get("MLCANARY_GIT_COMMIT"):
        return os.environ["MLCANARY_GIT_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def pip_requirements() -> tuple[str, ...]:
    """Exact pins of what loading a version logged by mlcanary needs (its skops-saved pipeline)."""
    import sklearn
    import skops

    # Explicit pins skip MLflow's requirement inference, which costs seconds per model.
    return (
        f"scikit-learn=={sklearn.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"skops=={skops.__version__}",
    )


def build_new_version(
    settings: Settings,
    dataset: Dataset,
    split: Split,
    model: Any,
    metrics: Mapping[str, float],
    champion: ChampionScore | None,
    gate: GateResult,
    commit: str,
) -> NewVersion:
    """Assemble what is registered: model, reference sample, metrics, params and lineage tags."""
    reference_rows = min(settings.training.reference_rows, len(split.train))
    reference = split.train[dataset.feature_names].sample(
        n=reference_rows, random_state=settings.training.seed
    )
    version_tags = tags.tagged(
        {
            tags.DATA_FINGERPRINT: dataset.fingerprint,
            tags.DATA_SOURCE: dataset.source[: tags.MAX_TEXT],
            tags.GIT_COMMIT: commit,
            tags.GATE: gate.outcome,
            tags.GATE_REASON: gate.reason[: tags.MAX_TEXT],
            tags.PRIMARY_METRIC: gate.metric,
            tags.TRAINED_AT: datetime.now(tz=UTC).isoformat(timespec="seconds"),
            **{tags.metric_key(k): f"{v:.6g}" for k, v in metrics.items()},
        }
    )
    champion_metrics = {f"champion_{k}": v for k, v in (champion.metrics if champion else {}).items()}
    if champion is not None:
        version_tags[tags.tag_name(tags.COMPARED_WITH_CHAMPION)] = champion.version
    params = {
        "estimator": settings.model.estimator,
        "factory": settings.model.factory,
        "test_size": str(settings.training.test_size),
        "seed": str(settings.training.seed),
        "rows": str(len(dataset.frame)),
        "features": ",".join(dataset.feature_names),
        **{f"param.{k}": str(v) for k, v in settings.model.params.items()},
    }
    return NewVersion(
        model=model,
        features=dataset.features,
        reference=reference.reset_index(drop=True),
        input_example=split.holdout[dataset.feature_names].head(3),
        metrics={**metrics, **champion_metrics},
        params=params,
        tags=version_tags,
        run_name=f"train-{settings.model.name}-{dataset.fingerprint[:8]}",
        pip_requirements=pip_requirements(),
    )


def assign_alias(
    registry: ModelRegistry,
    version: ModelVersionInfo,
    gate: GateResult,
    *,
    replace_candidate: bool,
) -> tuple[str | None, str]:
    """Set the alias the gate earned (or tag the rejection); returns (alias, reason).

    Idempotent: re-running it on the same version and gate sets the same alias and tags.
    """
    name, number = version.name, version.version
    if gate.outcome == "first_version":
        champion = registry.version_for_alias(name, CHAMPION)
        if champion is None or champion.version == number:
            registry.set_alias(name, CHAMPION, number)
            return CHAMPION, f"first version of {name}: it becomes @champion ({gate.reason})"
        # Someone else crowned a champion since we looked: be a candidate like everyone else.
        gate = GateResult("passed", gate.metric, gate.candidate_value, None, gate.tolerance, gate.reason)
    if gate.outcome == "failed":
        registry.set_tags(name, number, tags.tagged({tags.REJECTED: gate.reason[: tags.MAX_TEXT]}))
        return None, f"rejected, no alias set: {gate.reason}"
    current = registry.version_for_alias(name, CANDIDATE)
    if current is not None and current.version != number and not replace_candidate:
        reason = (
            f"{gate.reason}; but version {current.version} is already @candidate (a canary may be "
            "running), so no alias was set (set training.replace_candidate to replace it)"
        )
        registry.set_tags(name, number, tags.tagged({tags.NOT_PROMOTED: reason[: tags.MAX_TEXT]}))
        return None, reason
    registry.set_alias(name, CANDIDATE, number)
    return CANDIDATE, f"{gate.reason}: it becomes @candidate"


def make_outcome(
    settings: Settings,
    dataset: Dataset,
    version: ModelVersionInfo,
    assigned: tuple[str | None, str],
    gate: GateResult,
    metrics: Mapping[str, float],
    champion: ChampionScore | None,
    commit: str,
) -> TrainingOutcome:
    """Gather what a run did into its :class:`TrainingOutcome`."""
    alias, reason = assigned
    return TrainingOutcome(
        model=settings.model.name,
        version=version.version,
        alias=alias,
        gate=gate,
        metrics=dict(metrics),
        champion_version=champion.version if champion else None,
        champion_metrics=dict(champion.metrics) if champion and champion.metrics else None,
        data_fingerprint=dataset.fingerprint,
        data_source=dataset.source,
        git_commit=commit,
        reason=reason,
    )


def run_overrides(
    *,
    data_path: str | Path | None = None,
    target: str | None = None,
    model_name: str | None = None,
    estimator: str | None = None,
    replace_candidate: bool = False,
    synthetic: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Dotted config overrides for one run (from CLI options or flow parameters); None = keep."""
    overrides: dict[str, Any] = {}
    if data_path:
        overrides |= {"data.source": "file", "data.path": str(data_path)}
    named = {"data.target": target, "model.name": model_name, "model.estimator": estimator}
    named |= {f"data.synthetic.{k}": v for k, v in (synthetic or {}).items()}
    overrides |= {k: v for k, v in named.items() if v is not None}
    if replace_candidate:
        overrides["training.replace_candidate"] = True
    return overrides


# -- the whole run (the CLI's path; the flow composes the same steps as tasks) ------------------


def train(
    settings: Settings, registry: ModelRegistry, *, dataset: Dataset | None = None, log: Any = None
) -> TrainingOutcome:
    """Run every step in order and return what happened and why."""
    say: Callable[[str], None] = log or (lambda _message: None)
    dataset = dataset or load_dataset(settings.data)
    say(f"data: {dataset.source}, {len(dataset.frame)} rows, fingerprint {dataset.fingerprint}")
    split = split_dataset(dataset, test_size=settings.training.test_size, seed=settings.training.seed)
    model = fit_model(settings, dataset, split.train)
    threshold = settings.training.decision_threshold
    holdout_x, holdout_y = split.holdout[dataset.feature_names], split.holdout[dataset.target]
    metrics = evaluate(model, holdout_x, holdout_y, threshold=threshold)
    say(f"holdout: {settings.training.primary_metric} {metrics[settings.training.primary_metric]:.4f}")
    name = settings.model.name
    champion = score_champion(registry, name, split.holdout, dataset.target, threshold=threshold)
    gate = offline_gate(settings.training.primary_metric, metrics, champion, settings.training.gate_tolerance)
    say(f"gate: {gate.outcome}: {gate.reason}")
    commit = git_commit()
    new = build_new_version(settings, dataset, split, model, metrics, champion, gate, commit)
    version = registry.register(name, new)
    assigned = assign_alias(registry, version, gate, replace_candidate=settings.training.replace_candidate)
    outcome = make_outcome(settings, dataset, version, assigned, gate, metrics, champion, commit)
    say(outcome.summary())
    return outcome
