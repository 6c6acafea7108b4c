"""The rollout flows: ``start-canary``, ``canary-monitor`` (one tick), ``promote`` and ``rollback``.

Each builds the engine from the configuration (:func:`mlcanary.wiring.build_engine`) and runs one
task. ``canary-monitor`` is meant to run on a schedule through the 24-48 h window; with no model
given it ticks every model that has a release in progress, and one model's failure does not stop
the others. A run that finds another holding a model's lease (``mlcanary.rollout.lease``) does
nothing for that model and returns ``{"model": ..., "yielded": "yielded: <holder> holds the lease
... until ..."}`` instead of its summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from mlcanary.config import Settings, load_settings
from mlcanary.rollout.engine import NothingToDoError, RolloutEngine, RolloutError
from mlcanary.rollout.lease import LeaseHeldError
from mlcanary.wiring import build_engine
from tasks import rollout as steps
from tasks.notifications import flow_notifier

Profile = Literal["local", "demo", "kserve"]


def settings_for(profile: Profile, config_file: str | None) -> Settings:
    """The settings of a flow run: ``config_file`` when given (and not empty), else ``profile``."""
    return load_settings(profile, config_file=Path(config_file) if config_file else None)


def engine_for(settings: Settings) -> RolloutEngine:
    """The engine the flows use (tests replace this to inject fakes); notifications go to the
    Apprise URLs and the Prefect notification block configured in the environment."""
    from prefect.runtime import flow_run

    runner = f"Prefect flow run {flow_run.name}" if flow_run.name else "Prefect flow"
    return build_engine(settings, notifier=flow_notifier(settings), runner=runner)


@flow(name="start-canary")
def start_canary(
    model: str, version: str, profile: Profile = "local", config_file: str | None = None
) -> dict[str, Any]:
    """Deploy a version beside @champion at the first traffic step of the rollout policy.

    Args:
        model: Registered model name.
        version: The version to canary (MLflow version number, as a string).
        profile: Configuration profile when no config_file is given.
        config_file: Path to a config YAML file; overrides the profile.
    """
    engine = engine_for(settings_for(profile, config_file))
    try:
        return steps.release_summary(steps.start_release(engine, model, str(version)))
    except LeaseHeldError as held:
        return _yielded(model, held)


def _yielded(model: str, held: LeaseHeldError) -> dict[str, Any]:
    """What a run returns when another run held the model's lease: it did nothing."""
    get_run_logger().warning(str(held))
    return {"model": model, "yielded": str(held), "holder": held.holder}


def _active_models(engine: RolloutEngine) -> list[str]:
    return [name for name in engine.registry.list_models() if engine.active_release(name) is not None]


def _unstarted_candidates(engine: RolloutEngine) -> list[tuple[str, str]]:
    """(model, version) of each ``@candidate`` no release was ever started for: the start-canary run
    its webhook should have caused never came (Prefect down for longer than MLflow retries), or
    crashed after setting the alias and before writing the release's first tag."""
    found = []
    for name in engine.registry.list_models():
        version = engine.unstarted_candidate(name)
        if version is not None:
            found.append((name, version))
    return found


def _start_missed(engine: RolloutEngine, logger: Any) -> list[dict[str, Any]]:
    """Start the releases of :func:`_unstarted_candidates`; a refusal is logged, not raised."""
    started = []
    for name, version in _unstarted_candidates(engine):
        logger.warning(
            "%s v%s is @candidate but no canary was started for it: starting it now", name, version
        )
        try:
            started.append(steps.release_summary(steps.start_release(engine, name, version)))
        except (RolloutError, LeaseHeldError) as exc:  # refused, or another run is starting it
            logger.warning("%s v%s not started: %s", name, version, exc)
    return started


@flow(name="canary-monitor")
def monitor(
    model: str | None = None, profile: Profile = "local", config_file: str | None = None
) -> list[dict[str, Any]]:
    """One monitor tick: measure both arms, judge, act, record. Schedule it through the window.

    With no model, every model with a release in progress is ticked, and a ``@candidate`` that no
    release was ever started for (its webhook's start-canary run never came) is started.

    Args:
        model: Registered model name; empty for every model with a release in progress.
        profile: Configuration profile when no config_file is given.
        config_file: Path to a config YAML file; overrides the profile.
    """
    logger = get_run_logger()
    settings = settings_for(profile, config_file)
    engine = engine_for(settings)
    models = [model] if model else _active_models(engine)
    results: list[dict[str, Any]] = [] if model else _start_missed(engine, logger)
    if not models and not results:
        logger.info("no release in progress")
    failures = []
    for name in models:
        try:
            result = steps.tick(engine, name)
        except NothingToDoError as exc:
            logger.info(str(exc))
            continue
        except LeaseHeldError as held:
            # Another run (a manual step, an overlapping schedule, another worker) is acting on it.
            logger.info(str(held))
            results.append({"model": name, "yielded": str(held), "holder": held.holder})
            continue
        except Exception as exc:
            # One model's failure must not stop the others' ticks; it is re-raised below.
            logger.error("tick of %s failed: %s", name, exc)
            failures.append(f"{name}: {exc}")
            continue
        summary = steps.release_summary(result.release)
        if result.decision is not None:
            summary["action"] = result.decision.action
            if result.decision.action == "await_approval":
                # The approve-release deployment's trigger starts the paused approval run.
                steps.emit_approval_requested(result.release, profile, config_file)
        results.append(summary)
    _write_pending_evidence(engine, logger)
    if failures:
        raise RuntimeError("monitor tick failed for " + "; ".join(failures))
    return results


def _write_pending_evidence(engine: RolloutEngine, logger: Any) -> None:
    """Write the release evidence kept while MLflow was away, also of releases that ended since
    (no tick of theirs would); a failure here never fails the monitor (it stays kept)."""
    try:
        written = engine.write_pending_evidence()
    except Exception as exc:
        logger.warning("kept release evidence not written: %s", exc)
        return
    for name, count in written.items():
        if count:
            logger.info("wrote %d kept evidence entries of %s to MLflow", count, name)


@flow(name="promote")
def promote(
    model: str,
    reason: str = "promoted by hand from the Prefect UI",
    profile: Profile = "local",
    config_file: str | None = None,
) -> dict[str, Any]:
    """Promote the release in progress now: all traffic to the candidate, @champion moves to it.

    Args:
        model: Registered model name.
        reason: Why; recorded on the version and in the release's MLflow run.
        profile: Configuration profile when no config_file is given.
        config_file: Path to a config YAML file; overrides the profile.
    """
    engine = engine_for(settings_for(profile, config_file))
    try:
        return steps.release_summary(steps.promote_release(engine, model, reason))
    except LeaseHeldError as held:
        return _yielded(model, held)


@flow(name="rollback")
def rollback(
    model: str,
    reason: str = "rolled back by hand from the Prefect UI",
    profile: Profile = "local",
    config_file: str | None = None,
) -> dict[str, Any]:
    """Roll the release in progress back now: all traffic to the champion, the version rejected.

    Args:
        model: Registered model name.
        reason: Why; recorded as the version's rejection reason.
        profile: Configuration profile when no config_file is given.
        config_file: Path to a config YAML file; overrides the profile.
    """
    engine = engine_for(settings_for(profile, config_file))
    try:
        return steps.release_summary(steps.rollback_release(engine, model, reason))
    except LeaseHeldError as held:
        return _yielded(model, held)
