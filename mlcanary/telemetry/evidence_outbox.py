"""Release evidence MLflow could not take yet, kept in the inference-log database until it can.

A tick persists its outcome on the registry and then writes its evidence (metrics, the decision,
reports, the outcome of a release that ended) to the release's MLflow run. When MLflow goes away
between the two for longer than the retries, :class:`mlcanary.registry.evidence.MlflowEvidence`
keeps each write it could not make here, one row per write in order, and makes them at the next
call that reaches MLflow. The inference-log database (``telemetry.store_url``, SQLite or
PostgreSQL) is where they go for the same reason the lease is there: every runner that can tick
can reach it, so a tick on another worker or machine finds them (a file in one runner's state
directory would not). A row is deleted only after its write succeeded; every write is idempotent,
so a crash between the two at most repeats one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, Text, delete, insert, select

from mlcanary.telemetry.log_tables import MAX_MODEL_LENGTH, UTCDateTime
from mlcanary.telemetry.store import InferenceLogStore

_metadata = MetaData()
pending_evidence_table = Table(
    "mlcanary_pending_evidence",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(MAX_MODEL_LENGTH), nullable=False, index=True),
    Column("kept_at", UTCDateTime(), nullable=False),
    Column("entry", Text, nullable=False),
)


class StoreEvidenceOutbox:
    """:class:`mlcanary.registry.evidence.EvidenceOutbox` on the inference-log database: entries
    (opaque text) per model, read back in the order they were added."""

    def __init__(self, engine: Engine, *, now: Callable[[], datetime] = lambda: datetime.now(tz=UTC)) -> None:
        self._engine = engine
        self._now = now
        _metadata.create_all(engine)

    @classmethod
    def from_url(cls, url: str) -> StoreEvidenceOutbox:
        """The outbox in the inference-log database at ``url`` (SQLite or PostgreSQL)."""
        return cls(InferenceLogStore(url).engine)

    def add(self, model: str, entry: str) -> None:
        """Keep ``entry`` for ``model`` after those already kept."""
        with self._engine.begin() as connection:
            connection.execute(
                insert(pending_evidence_table).values(model=model, kept_at=self._now(), entry=entry)
            )

    def pending(self, model: str) -> list[tuple[int, str]]:
        """``(id, entry)`` of every entry kept for ``model``, oldest first."""
        t = pending_evidence_table
        with self._engine.connect() as connection:
            rows = connection.execute(select(t.c.id, t.c.entry).where(t.c.model == model).order_by(t.c.id))
            return [(row.id, row.entry) for row in rows]

    def remove(self, entry_id: int) -> None:
        """Forget an entry once it was written (a no-op if another run already removed it)."""
        with self._engine.begin() as connection:
            connection.execute(delete(pending_evidence_table).where(pending_evidence_table.c.id == entry_id))

    def models(self) -> list[str]:
        """The models with entries kept."""
        t = pending_evidence_table
        with self._engine.connect() as connection:
            return list(connection.scalars(select(t.c.model).distinct().order_by(t.c.model)))
