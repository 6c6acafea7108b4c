"""Which drift reference a release uses, said without reading any data (``mlcanary status`` shows
it): what :mod:`mlcanary.signals.reference` reads, described without importing pandas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from mlcanary.rollout import tags
from mlcanary.rollout.durations import format_duration
from mlcanary.rollout.versions import ModelVersionInfo


@dataclass(frozen=True)
class ReferenceConfig:
    """Where references come from (``telemetry.reference_dataset`` / ``reference_window``;
    ``target`` is dropped from a dataset; at most ``max_rows`` rows are kept)."""

    dataset: Path | None = None
    window: timedelta = timedelta(hours=24)
    target: str | None = None
    max_rows: int = 2_000


ReferenceKind = Literal["dataset", "training", "logged"]


@dataclass(frozen=True)
class ReferenceSource:
    """Which reference applies (``kind``) and one sentence saying so (``description``)."""

    kind: ReferenceKind
    description: str
    path: Path | None = None


def describe_reference(
    config: ReferenceConfig, champion: ModelVersionInfo, release_started_at: datetime | None = None
) -> ReferenceSource:
    """Which drift reference a release of a candidate beside ``champion`` uses."""
    dataset = config.dataset
    if dataset is not None:
        return ReferenceSource("dataset", f"the dataset {dataset}", Path(dataset))
    if champion.tag(tags.REFERENCE_ARTIFACT):
        return ReferenceSource("training", f"the training sample of v{champion.version} (mlcanary train)")
    window = format_duration(config.window)
    when = (
        f"before {release_started_at:%Y-%m-%d %H:%M:%S} UTC" if release_started_at else "before the release"
    )
    return ReferenceSource(
        "logged", f"v{champion.version}'s logged inputs in the {window} {when} (not trained by mlcanary)"
    )
