"""The inference log's tables: live rows, the shadow phase's mirrored copies, and feedback labels.

Table definitions only (SQLAlchemy Core, one :data:`metadata`):
:class:`~mlcanary.telemetry.store.InferenceLogStore` creates them and is the only writer. The
running sums' tables are in :mod:`mlcanary.telemetry.rollup_tables`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)
from sqlalchemy.types import TypeDecorator

#: Upper bounds of the string columns; the ingest layer rejects longer values before writing.
MAX_REQUEST_ID_LENGTH = 255
MAX_MODEL_LENGTH = 255
MAX_SOURCE_LENGTH = 1024
MAX_VERSION_LENGTH = 64
MAX_ARM_LENGTH = 32


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    SQLite has no time zones: values are stored as naive UTC text (which sorts chronologically) and
    come back tagged UTC. Naive datetimes passed in are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Plain JSON (text) on PostgreSQL too, not JSONB: JSONB reorders an object's keys, so the feature
# columns of a fetch would come back in another order than the request sent them, and a model fed
# by position (no feature names) would be re-scored on permuted inputs.
_JSON = JSON(none_as_null=True)

metadata = MetaData()


def _log_table(name: str) -> Table:
    """The columns of an inference log (live traffic, or the mirrored copies of the shadow phase)."""
    return Table(
        name,
        metadata,
        Column("request_id", String(MAX_REQUEST_ID_LENGTH), nullable=False),
        Column("instance_index", Integer, nullable=False),
        # Earliest arrival of either half: the time axis every window query uses.
        Column("received_at", UTCDateTime, nullable=False),
        Column("request_received_at", UTCDateTime, nullable=True),
        Column("response_received_at", UTCDateTime, nullable=True),
        Column("event_time", UTCDateTime, nullable=True),
        Column("model", String(MAX_MODEL_LENGTH), nullable=False),
        Column("arm", String(MAX_ARM_LENGTH), nullable=True),
        Column("version", String(MAX_VERSION_LENGTH), nullable=True),
        Column("source", String(MAX_SOURCE_LENGTH), nullable=True),
        Column("protocol", String(8), nullable=True),
        Column("status_code", Integer, nullable=True),
        Column("latency_ms", Float, nullable=True),
        Column("features", _JSON, nullable=True),
        Column("prediction", Integer, nullable=True),
        Column("probability", Float, nullable=True),
        PrimaryKeyConstraint("request_id", "instance_index", name=f"pk_{name}"),
        Index(f"ix_{name}_model_received", "model", "received_at"),
        Index(f"ix_{name}_model_arm_received", "model", "arm", "received_at"),
        # Few rows are ever waiting for their other half; these keep counting them cheap at volume.
        Index(f"ix_{name}_request_received", "request_received_at"),
        Index(f"ix_{name}_response_received", "response_received_at"),
    )


inference_log = _log_table("inference_log")
"""What users were answered: one row per instance of a live request."""
shadow_log = _log_table("shadow_log")
"""The shadow phase's mirrored copies: the candidate's answers no user saw, one row per instance,
under the request id of the live request they copy (so ``inference_log`` holds its other answer).
A table of its own, so that no query of the live traffic can count them, and so that a database
from before the shadow phase only gains a table (``create_all``) and never changes one."""

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(MAX_REQUEST_ID_LENGTH), nullable=False),
    Column("instance_index", Integer, nullable=False),
    Column("label", Integer, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("request_id", "instance_index", name="pk_feedback"),
)

#: Columns of :meth:`InferenceLogStore.fetch` before the expanded feature columns.
LOG_COLUMNS: tuple[str, ...] = (
    "request_id",
    "instance_index",
    "received_at",
    "event_time",
    "model",
    "arm",
    "version",
    "source",
    "protocol",
    "status_code",
    "latency_ms",
    "prediction",
    "probability",
    "label",
)


__all__ = [
    "LOG_COLUMNS",
    "MAX_ARM_LENGTH",
    "MAX_MODEL_LENGTH",
    "MAX_REQUEST_ID_LENGTH",
    "MAX_SOURCE_LENGTH",
    "MAX_VERSION_LENGTH",
    "UTCDateTime",
    "feedback",
    "inference_log",
    "metadata",
    "shadow_log",
]
