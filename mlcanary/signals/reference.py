"""The drift reference of a release (and the rows preflight scores): which data, and from where.

In order:

1. ``telemetry.reference_dataset``, a CSV or Parquet file, when configured: the user's own data
   for every version;
2. the champion's training sample, for a champion trained by ``mlcanary train`` (the version
   carries the ``mlcanary.reference_artifact`` tag);
3. otherwise the champion's own logged inputs (its arm, its version) received in the
   ``telemetry.reference_window`` before the release started: a version registered with the plain
   MLflow API has no training sample, but the traffic the champion served is what the candidate
   is compared against.

:func:`describe_reference` says which one applies without reading any data (``status`` shows it);
:func:`reference_rows` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from mlcanary.data.loader import DataError, read_table
from mlcanary.registry.protocol import ModelRegistry
from mlcanary.rollout import tags
from mlcanary.rollout.durations import format_duration
from mlcanary.rollout.versions import ModelVersionInfo
from mlcanary.signals.model_signals import NoReferenceError

if TYPE_CHECKING:
    from mlcanary.telemetry.store import InferenceLogStore


@dataclass(frozen=True)
class ReferenceConfig:
    """Where references come from (``telemetry.reference_dataset`` / ``reference_window``;
    ``target`` is dropped from a dataset; at most ``max_rows`` rows are kept)."""

    dataset: Path | None = None
    window: timedelta = timedelta(hours=24)
    target: str | None = None
    max_rows: int = 2_000


ReferenceKind = Literal["dataset", "training", "logged"]
_META_COLUMNS = frozenset(
    {"request_id", "instance_index", "model", "arm", "version", "received_at", "event_time", "source"}
)


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


def reference_rows(
    config: ReferenceConfig,
    registry: ModelRegistry,
    store: InferenceLogStore | None,
    model: str,
    champion_version: str,
    before: datetime,
    *,
    max_rows: int | None = None,
) -> tuple[pd.DataFrame, str]:
    """The reference rows (feature columns only) and the sentence describing where they come from.

    Raises :class:`~mlcanary.signals.model_signals.NoReferenceError` when the source holds no rows
    (say, no logged traffic in the window) and ``ValueError`` for a configured dataset that cannot
    be read.
    """
    champion = registry.get_version(model, champion_version)
    source = describe_reference(config, champion, before)
    limit = max_rows or config.max_rows
    if source.kind == "dataset":
        assert source.path is not None
        try:
            frame = read_table(source.path)
        except DataError as exc:
            raise ValueError(f"telemetry.reference_dataset: {exc}") from None
        if config.target:
            frame = frame.drop(columns=[config.target], errors="ignore")
    elif source.kind == "training":
        frame = registry.load_reference(model, champion_version)
    else:
        if store is None:
            raise NoReferenceError("no inference log to read the champion's logged inputs from")
        since = before - config.window
        logged = store.fetch(model, "champion", since=since, until=before, limit=limit * 4)
        if len(logged):
            logged = logged[(logged["version"] == str(champion_version)) & logged["status_code"].eq(200)]
        from mlcanary.telemetry.store import LOG_COLUMNS

        frame = logged.drop(columns=[c for c in LOG_COLUMNS if c in logged.columns])
        frame = frame.drop(columns=[c for c in frame.columns if c in _META_COLUMNS])
    if len(frame) == 0:
        raise NoReferenceError(f"{source.description} holds no rows")
    if len(frame) > limit:
        frame = frame.sample(n=limit, random_state=0)
    return frame.reset_index(drop=True), f"{source.description}, {len(frame)} rows"
