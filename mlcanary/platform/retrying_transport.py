"""An httpx transport that retries the answers a busy server gives for "try again".

Prefect's server answers 503 when its database is busy (SQLite "database is locked") and has rolled
the request back; Prefect's own client retries 429, 502 and 503 with backoff, so a caller that talks
to the API over plain HTTP must do the same or fail on a machine that is merely loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import httpx

__all__ = ["RETRIED_STATUSES", "RetryingTransport"]

#: Answers that mean the request did not take effect and may be sent again.
RETRIED_STATUSES: Final = frozenset({429, 502, 503})


class RetryingTransport(httpx.BaseTransport):
    """Sends each request through ``inner`` up to ``attempts`` times while the answer's status is in
    :data:`RETRIED_STATUSES`, waiting ``first_delay_s`` doubled each time (at most ``max_delay_s``,
    or the answer's ``Retry-After`` seconds if larger and still within ``max_delay_s``). Returns the
    last answer, so the caller's ``raise_for_status`` still reports a server that stays busy.
    Connection errors are not retried here: they are the caller's "server down" case."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        attempts: int = 6,
        first_delay_s: float = 0.25,
        max_delay_s: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1 or first_delay_s < 0 or max_delay_s < first_delay_s:
            raise ValueError("attempts must be >= 1 and 0 <= first_delay_s <= max_delay_s")
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self._attempts = attempts
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # The body is read once so that every attempt can send it again.
        request.read()
        for attempt in range(self._attempts):
            response = self._inner.handle_request(request)
            if response.status_code not in RETRIED_STATUSES or attempt == self._attempts - 1:
                return response
            delay = self._delay(attempt, response.headers.get("retry-after"))
            response.read()
            response.close()
            self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self._first_delay_s * 2**attempt, self._max_delay_s)
        try:
            asked = float(retry_after) if retry_after is not None else 0.0
        except ValueError:
            asked = 0.0
        return max(delay, min(asked, self._max_delay_s))

    def close(self) -> None:
        self._inner.close()
