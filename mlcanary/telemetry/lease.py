"""The release lease in the inference-log database: one row per model, taken by compare-and-set.

Why here and not on the MLflow registry: MLflow's tag and alias APIs only overwrite — there is no
"set this tag if it still holds that value" call, so two runs that both read "free" would both
write and both believe they hold the lease. The inference-log database (SQLite or PostgreSQL, the
``telemetry.store_url`` every monitor already reads its measurements from, so every runner that can
tick can reach it) gives a real compare-and-set in one statement::

    INSERT INTO mlcanary_release_lease (model, holder, acquired_at, expires_at) VALUES (...)
    ON CONFLICT (model) DO UPDATE SET holder = excluded.holder, ...
    WHERE mlcanary_release_lease.expires_at <= :now OR mlcanary_release_lease.holder = :holder

On SQLite the statement runs under the database's single write lock; on PostgreSQL ``INSERT ... ON
CONFLICT DO UPDATE`` locks the conflicting row and evaluates the ``WHERE`` on its latest committed
version. Either way, of two runs arriving together exactly one changes the row; each then reads the
row back in the same transaction and holds the lease only if the row names it. Times come from the
runner's clock (UTC): runners' clocks must agree to well within ``ttl``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Engine, MetaData, String, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from mlcanary.rollout.lease import LeaseHeldError, LeaseUnavailableError
from mlcanary.telemetry.log_tables import MAX_MODEL_LENGTH, UTCDateTime
from mlcanary.telemetry.store import InferenceLogStore

logger = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(minutes=2)
"""How long a lease lasts after it was last renewed: a crashed holder blocks its model this long."""
DEFAULT_MAX_HOLD = timedelta(hours=1)
"""How long a live holder may keep renewing: past it, the lease lapses ``ttl`` later."""

_metadata = MetaData()
lease_table = Table(
    "mlcanary_release_lease",
    _metadata,
    Column("model", String(MAX_MODEL_LENGTH), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("acquired_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)


def holder_name(label: str) -> str:
    """A holder's name: what runs (``label``), where (host, pid) and a nonce unique to this hold."""
    return f"{label} on {socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"[:255]


class StoreLease:
    """:class:`mlcanary.rollout.lease.ReleaseLease` on the inference-log database (see the module
    docstring for why it is atomic). Renewed every ``ttl / 3`` by a daemon thread while held, for at
    most ``max_hold``; released on exit from the block."""

    def __init__(
        self,
        engine: Engine,
        *,
        label: str = "mlcanary",
        ttl: timedelta = DEFAULT_TTL,
        max_hold: timedelta = DEFAULT_MAX_HOLD,
        now: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
    ) -> None:
        if ttl <= timedelta(0) or max_hold < ttl:
            raise ValueError("the lease needs ttl > 0 and max_hold >= ttl")
        self._engine = engine
        self.label = label
        self.ttl = ttl
        self.max_hold = max_hold
        self._now = now
        _metadata.create_all(engine)

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> StoreLease:
        """A lease on the inference-log database at ``url`` (SQLite or PostgreSQL)."""
        return cls(InferenceLogStore(url).engine, **kwargs)  # type: ignore[arg-type]

    def _insert(self):  # type: ignore[no-untyped-def]
        return (sqlite if self._engine.dialect.name == "sqlite" else postgresql).insert(lease_table)

    def acquire(self, model: str, holder: str) -> datetime:
        """Take the lease on ``model`` for ``holder`` (or extend it, if ``holder`` has it); returns
        when it expires. Raises :class:`LeaseHeldError` if another holder's lease has not expired."""
        now = self._now()
        until = now + self.ttl
        t = lease_table
        statement = (
            self._insert()
            .values(model=model, holder=holder, acquired_at=now, expires_at=until)
            .on_conflict_do_update(
                index_elements=[t.c.model],
                set_={"holder": holder, "acquired_at": now, "expires_at": until},
                where=(t.c.expires_at <= now) | (t.c.holder == holder),
            )
        )
        with self._engine.begin() as connection:
            connection.execute(statement)
            row = connection.execute(select(t.c.holder, t.c.expires_at).where(t.c.model == model)).one()
        if row.holder != holder:
            raise LeaseHeldError(model, row.holder, row.expires_at)
        return until

    def renew(self, model: str, holder: str) -> bool:
        """Push the expiry of ``holder``'s lease to now + ttl; False if it no longer holds it."""
        now = self._now()
        t = lease_table
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(t)
                .where(t.c.model == model, t.c.holder == holder, t.c.expires_at > now)
                .values(expires_at=now + self.ttl)
            ).rowcount
        return changed == 1

    def release(self, model: str, holder: str) -> None:
        """Give the lease up (a no-op if ``holder`` no longer holds it)."""
        t = lease_table
        with self._engine.begin() as connection:
            connection.execute(delete(t).where(t.c.model == model, t.c.holder == holder))

    def holder_of(self, model: str) -> tuple[str, datetime] | None:
        """Who holds the lease on ``model`` and until when, or None when it is free or expired."""
        t = lease_table
        with self._engine.connect() as connection:
            row = connection.execute(select(t.c.holder, t.c.expires_at).where(t.c.model == model)).first()
        if row is None or row.expires_at <= self._now():
            return None
        return row.holder, row.expires_at

    @contextmanager
    def hold(self, model: str) -> Iterator[None]:
        """Hold the lease on ``model`` for the block (see :class:`ReleaseLease`)."""
        holder = holder_name(self.label)
        try:
            self.acquire(model, holder)
        except SQLAlchemyError as exc:
            raise LeaseUnavailableError(
                f"the release lease of {model} cannot be taken ({type(exc).__name__} on "
                f"{self._engine.url.render_as_string(hide_password=True)}); nothing was done"
            ) from None
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._keep_renewed, args=(model, holder, stop), name=f"lease-{model}", daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                self.release(model, holder)
            except Exception as exc:  # the lease then expires on its own after ttl
                logger.warning("could not release the lease on %s: %s", model, exc)

    def _keep_renewed(self, model: str, holder: str, stop: threading.Event) -> None:
        interval = self.ttl.total_seconds() / 3
        deadline = self._now() + self.max_hold
        while not stop.wait(interval):
            if self._now() + self.ttl > deadline:
                logger.warning("lease on %s held for its maximum %s: it lapses now", model, self.max_hold)
                return
            try:
                if not self.renew(model, holder):
                    logger.warning("lost the lease on %s (expired before it was renewed)", model)
                    return
            except Exception as exc:  # a database hiccup: try again at the next interval
                logger.warning("could not renew the lease on %s: %s", model, exc)
