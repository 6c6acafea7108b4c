"""Asynchronous delivery of inference events to the collector, in KServe's payload-logger format.

Unlike KServe's logger agent (a slow sink back-pressures inference there), logging must never slow
down or fail a prediction: :meth:`PayloadLogger.submit` never blocks, and when the bounded queue is
full the event is dropped and counted. Drops and delivery failures are logged as warnings (the
first at once, then at most one per interval with the counts) and exposed by :meth:`stats`, so a
lossy log is visible, never silent.

One background thread owns one keep-alive ``httpx.Client`` and POSTs each event in CloudEvents
binary mode (``ce-*`` headers, ``content-type: application/json``, raw payload as the body).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httpx

from mlcanary.telemetry.events import InferenceEvent

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000
#: With the default backoff (0.1 s doubling, at most 2 s) 18 retries span about 30 s: an inference
#: log restarting or briefly locked answers 503 meanwhile, and no event is lost.
DEFAULT_MAX_RETRIES = 18
DEFAULT_MAX_BACKOFF_S = 2.0
#: How long a stopping model server lets its logger deliver what is queued (the retry span): a
#: rollback stops the candidate's server while the collector may be behind, and those queued events
#: are the bad candidate's evidence. An empty queue closes at once.
DRAIN_ON_STOP_S = 30.0
UVICORN_GRACEFUL_S = 10
"""uvicorn's graceful shutdown of a model server (in-flight requests finish) before the drain."""


class EventSink(Protocol):
    """Where a model server hands its inference events.

    ``submit`` must return at once (never block inference) and never raise: it returns True if the
    event was accepted for delivery and False if it was dropped.
    """

    def submit(self, event: InferenceEvent) -> bool: ...


class _RateLimitedWarning:
    """Warns the first time, then at most once per ``interval`` seconds with the count since."""

    def __init__(self, what: str, interval: float, clock: Callable[[], float]) -> None:
        self._what = what
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._unreported = 0
        self._lock = threading.Lock()

    def record(self, total: int, detail: str = "") -> None:
        with self._lock:
            self._unreported += 1
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                return
            count, self._unreported, self._last = self._unreported, 0, now
        self._warn(count, total, detail)

    def flush(self, total: int) -> None:
        with self._lock:
            count, self._unreported = self._unreported, 0
        if count:
            self._warn(count, total, "")

    def _warn(self, count: int, total: int, detail: str) -> None:
        suffix = f": {detail}" if detail else ""
        logger.warning("payload logger %s %d event(s) (%d in total)%s", self._what, count, total, suffix)


class PayloadLogger:
    """Bounded, non-blocking sender of :class:`InferenceEvent` to a collector URL (an :class:`EventSink`).

    ``submit`` enqueues without blocking; a full queue (``max_queue`` events) or a closed logger
    drops the event. The worker POSTs each event, one at a time and in order; a connection error, a
    timeout, a 429 or a 5xx (the collector answers 503 while its database is unavailable) is
    retried at most ``max_retries`` times with backoff ``min(retry_backoff * 2**attempt,
    max_backoff)`` seconds, then the event is counted as failed; any other non-2xx answer fails at
    once (the collector rejected it). Events submitted meanwhile wait in the queue, so an outage
    shorter than the retry span loses nothing while the queue has room. Counters only grow, except
    ``pending``; ``enqueued`` - ``sent`` - ``failed`` is what is queued, in flight, or was dropped
    at close. ``close`` drains the queue for up to ``timeout``
    seconds, then drops what is left.

    The worker thread starts in the constructor and is a daemon, so a stuck collector cannot keep
    the process alive. ``client`` may be injected (the logger then closes it on ``close``).
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        timeout: float = 5.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = 0.1,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S,
        warn_interval: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        self.url = url
        self.max_queue = max_queue
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._max_backoff = max_backoff
        self._client = client or httpx.Client(timeout=timeout, trust_env=False)
        self._queue: deque[InferenceEvent] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._enqueued = 0
        self._sent = 0
        self._dropped = 0
        self._failed = 0
        self._drop_warning = _RateLimitedWarning("dropped", warn_interval, clock)
        self._fail_warning = _RateLimitedWarning("failed to deliver", warn_interval, clock)
        self._thread = threading.Thread(target=self._run, name="mlcanary-payload-logger", daemon=True)
        self._thread.start()

    def submit(self, event: InferenceEvent) -> bool:
        """Queue ``event`` for delivery; False (and counted as dropped) if the queue is full or closed."""
        with self._cond:
            if self._closing or len(self._queue) >= self.max_queue:
                self._dropped += 1
                dropped = self._dropped
                accepted = False
            else:
                self._queue.append(event)
                self._enqueued += 1
                self._cond.notify()
                accepted = True
        if not accepted:
            self._drop_warning.record(dropped, "queue full or logger closed")
        return accepted

    def stats(self) -> dict[str, int]:
        """Counters ``enqueued``, ``sent``, ``dropped``, ``failed``; ``pending`` (queued); ``capacity``."""
        with self._cond:
            return {
                "enqueued": self._enqueued,
                "sent": self._sent,
                "dropped": self._dropped,
                "failed": self._failed,
                "pending": len(self._queue),
                "capacity": self.max_queue,
            }

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting events, deliver the queued ones for up to ``timeout`` seconds, stop the thread.

        Events still queued after ``timeout`` are dropped (and counted). Safe to call more than once.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                left = len(self._queue)
                self._queue.clear()
                self._dropped += left
            if left:
                logger.warning("payload logger closed with %d undelivered event(s); they are dropped", left)
            # Wake an in-flight backoff; a POST in progress ends with its own timeout.
            self._thread.join(0.5)
        with self._cond:
            dropped, failed = self._dropped, self._failed
        self._drop_warning.flush(dropped)
        self._fail_warning.flush(failed)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    event = self._queue.popleft()
                delivered, detail = self._deliver(event)
                with self._cond:
                    if delivered:
                        self._sent += 1
                    else:
                        self._failed += 1
                        failed = self._failed
                if not delivered:
                    self._fail_warning.record(failed, detail)
        finally:
            self._client.close()

    def _deliver(self, event: InferenceEvent) -> tuple[bool, str]:
        headers = event.to_headers()
        detail = ""
        for attempt in range(self._max_retries + 1):
            backoff = min(self._retry_backoff * 2 ** min(attempt - 1, 30), self._max_backoff)
            if attempt and self._abort.wait(backoff):
                return False, "logger closed during retry"
            try:
                response = self._client.post(self.url, content=event.body, headers=headers)
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return True, ""
            detail = f"collector answered HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                return False, detail
        return False, detail
