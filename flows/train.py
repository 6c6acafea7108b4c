"""The ``train`` flow: load → split → fit → evaluate → score @champion → gate → register → alias.

Run it locally with ``python -m flows.train`` (an ephemeral Prefect server starts if no
``PREFECT_API_URL`` is set) or through the ``train`` deployment in ``prefect.yaml``.
``mlcanary train`` runs the same steps without Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from mlcanary import training
from mlcanary.config import load_settings
from mlcanary.registry.mlflow_registry import registry_from_settings
from tasks import training as steps

Estimator = Literal["logistic_regression", "random_forest", "hist_gradient_boosting"]


def _report(outcome: training.TrainingOutcome) -> str:
    metric = outcome.gate.metric
    champion = (
        f"{outcome.champion_metrics[metric]:.4f} (v{outcome.champion_version})"
        if outcome.champion_metrics
        else "—"
    )
    return "\n".join(
        [
            f"# {outcome.model} v{outcome.version} → {'@' + outcome.alias if outcome.alias else 'no alias'}",
            "",
            outcome.reason,
            "",
            "| | candidate | champion |",
            "|---|---|---|",
            f"| {metric} | {outcome.metrics[metric]:.4f} | {champion} |",
            "",
            f"data `{outcome.data_fingerprint}` from {outcome.data_source}; commit `{outcome.git_commit}`",
        ]
    )


@flow(name="train", log_prints=False)
def train(
    profile: Literal["local", "demo", "kserve"] = "local",
    config_file: str | None = None,
    data_path: str | None = None,
    target: str | None = None,
    estimator: Estimator | None = None,
    replace_candidate: bool = False,
) -> dict[str, Any]:
    """Train a model version and give it the alias it earns.

    Args:
        profile: Configuration profile (configs/<profile>.yaml) when no config_file is given.
        config_file: Path to a config YAML file; overrides the profile.
        data_path: Your own CSV or Parquet file; empty for the configured data.
        target: Name of the 0/1 label column in data_path.
        estimator: Override the configured estimator.
        replace_candidate: Take @candidate even if another version holds it (a canary may be running).

    Returns:
        The training outcome: version, alias, gate verdict and reason, metrics, lineage.
    """
    logger = get_run_logger()
    settings = load_settings(
        profile,
        config_file=Path(config_file) if config_file else None,
        overrides=training.run_overrides(
            data_path=data_path, target=target, estimator=estimator, replace_candidate=replace_candidate
        ),
    )
    registry = registry_from_settings(settings)
    dataset = steps.load_data(settings)
    split = steps.split_data(settings, dataset)
    model = steps.fit_model(settings, dataset, split.train)
    metrics = steps.evaluate_model(settings, model, dataset, split.holdout)
    champion = steps.score_champion(settings, registry, dataset, split.holdout)
    gate = steps.offline_gate(settings, metrics, champion)
    commit = training.git_commit()
    new = training.build_new_version(settings, dataset, split, model, metrics, champion, gate, commit)
    version = steps.register_version(settings, registry, new)
    assigned = steps.assign_alias(settings, registry, version, gate)
    outcome = training.make_outcome(settings, dataset, version, assigned, gate, metrics, champion, commit)
    key = steps.artifact_key("train", settings.model.name)
    create_markdown_artifact(_report(outcome), key=key, description=outcome.summary())
    logger.info(outcome.summary())
    return outcome.to_dict()


if __name__ == "__main__":
    train()
