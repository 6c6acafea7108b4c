"""The release lease: at most one run acts on a model's release at a time.

Two runs of the monitor can meet (a schedule overlapping a slow tick, a manual ``mlcanary step``
beside the scheduled flow, two Prefect workers); a manual promote can meet a tick. Prefect's
deployment concurrency limit serialises runs of one deployment only, and nothing when the engine is
driven from the command line, so the engine takes a per-model lease around every action (start,
tick, promote, roll back, approve, reject). A run that finds the lease held by another holder whose
lease has not expired does nothing and raises :class:`LeaseHeldError` ("yielded: ..."), which the
command line and the flows report as a yield, not a failure.

The lease is bounded: it expires ``ttl`` after it was last renewed, so a holder that crashed (its
process killed, its machine gone) blocks the model for at most ``ttl``; a live holder renews it while
it works, up to a maximum hold. The real adapter is :class:`mlcanary.telemetry.lease.StoreLease`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Protocol


class LeaseHeldError(Exception):
    """Another run holds the lease on this model: this run did nothing (it yielded).

    ``str(error)`` is the line the command line and the flows show:
    ``yielded: <holder> holds the lease on <model> until <time> UTC``.
    """

    def __init__(self, model: str, holder: str, until: datetime) -> None:
        self.model = model
        self.holder = holder
        self.until = until
        super().__init__(f"yielded: {holder} holds the lease on {model} until {until:%Y-%m-%d %H:%M:%S} UTC")


class LeaseUnavailableError(Exception):
    """The lease's store cannot be reached, so whether another run acts is unknown. Every action
    but a roll back stops here (nothing was done); a roll back goes on without the lease, since
    moving traffic off a bad candidate must not wait for a database."""


class ReleaseLease(Protocol):
    """A per-model lease every runner of the engine sees.

    ``hold(model)`` is a context manager: on entry it takes the lease (atomically: of two callers at
    once exactly one gets it) or raises :class:`LeaseHeldError` naming the current holder and when
    its lease ends (:class:`LeaseUnavailableError` when its store cannot be reached); while the
    block runs the lease stays held (renewed if the block is long, up to a bound); on exit, normal
    or by an exception, it is released. A holder that dies without exiting the block loses the
    lease when it expires.
    """

    def hold(self, model: str) -> AbstractContextManager[None]: ...


class NoLease:
    """No lease at all: for a single runner (tests on fakes, dry runs)."""

    def hold(self, model: str) -> AbstractContextManager[None]:
        return nullcontext()
