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

:func:`~mlcanary.signals.reference_source.describe_reference` says which one applies without
reading any data (``status`` shows it; it lives apart, free of pandas); :func:`reference_rows` reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from mlcanary.data.loader import DataError, read_table
from mlcanary.registry.protocol import ModelRegistry
from mlcanary.signals.model_signals import NoReferenceError
from mlcanary.signals.reference_source import (
    ReferenceConfig,
    ReferenceKind,
    ReferenceSource,
    describe_reference,
)

if TYPE_CHECKING:
    from mlcanary.telemetry.store import InferenceLogStore


_META_COLUMNS = frozenset(
    {"request_id", "instance_index", "model", "arm", "version", "received_at", "event_time", "source"}
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


__all__ = ["ReferenceConfig", "ReferenceKind", "ReferenceSource", "describe_reference", "reference_rows"]
