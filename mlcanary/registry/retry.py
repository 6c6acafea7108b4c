"""Retrying registry calls while MLflow is unreachable: bounded exponential backoff, then a clear error.

Only transient failures are retried (:func:`is_transient`): a connection that fails or times out, and
answers MLflow marks as the server's fault (HTTP 5xx but 501) or rate limiting (429). A missing model, a bad
argument or a permission problem fails at once. The calls retried are the registry's reads and its
idempotent writes (aliases, tags): repeating one after an unclear outcome cannot change the result.

After :attr:`RetryPolicy.attempts` failures :func:`call_with_retry` raises
:class:`~mlcanary.rollout.versions.RegistryUnavailableError` naming the operation, the attempts, the
time spent and the last error. The rollout engine records a release's phase before each step of an
action, so a tick that ends with this error is resumed by the next one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mlcanary.rollout.versions import (
    ModelNotFoundError,
    RegistryUnavailableError,
    SignatureMissingError,
    VersionNotFoundError,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

_PERMANENT = (ModelNotFoundError, VersionNotFoundError, SignatureMissingError, RegistryUnavailableError)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (1: no retry); the waits between them start at ``first_delay_s``
    and double up to ``max_delay_s``."""

    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError(f"invalid retry policy {self}")

    def delays(self) -> list[float]:
        """The waits between attempts (``attempts - 1`` of them)."""
        return [min(self.first_delay_s * 2**i, self.max_delay_s) for i in range(self.attempts - 1)]


NO_RETRY = RetryPolicy(attempts=1, first_delay_s=0.0, max_delay_s=0.0)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status MLflow gives an ``MlflowException``, or an error's own ``http_status``
    (:class:`~mlcanary.registry.read_only.RegistryHttpError`); None for other errors."""
    # Only a loaded module can have raised its exception: never import mlflow just to look.
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.MlflowException):
        return int(exc.get_http_status_code())
    status = getattr(exc, "http_status", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says "try again later"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _PERMANENT):
            return False
        status = _status_of(current)
        if status is not None and ((status >= 500 and status != 501) or status == 429):
            # MLflow reports a failed connection as INTERNAL_ERROR (500) too.
            return True
        if isinstance(current, (ConnectionError, TimeoutError)) or _is_requests_io_error(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_requests_io_error(exc: BaseException) -> bool:
    requests = sys.modules.get("requests")
    return requests is not None and isinstance(exc, (requests.ConnectionError, requests.Timeout))


def call_with_retry(
    policy: RetryPolicy,
    what: str,
    call: Callable[[], T],
    *,
    where: str = "the registry",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on transient failures by ``policy``; ``what`` and ``where`` name it in
    the log and in the :class:`RegistryUnavailableError` raised when the attempts run out. With a
    single attempt, ``call()``'s own error is raised unchanged."""
    if policy.attempts == 1:
        return call()  # no retry: the error as it is
    delays = policy.delays()
    started = time.monotonic()
    for attempt in range(policy.attempts):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == len(delays):
                spent = time.monotonic() - started
                raise RegistryUnavailableError(
                    f"{where} is unavailable: {what} failed {policy.attempts} times in {spent:.1f} s; "
                    f"last error: {_short(exc)}"
                ) from exc
            logger.warning(
                "%s failed (%s), attempt %d of %d; retrying in %.1f s",
                what,
                _short(exc),
                attempt + 1,
                policy.attempts,
                delays[attempt],
            )
            sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
