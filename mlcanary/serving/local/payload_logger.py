"""Asynchronous delivery of inference events to the collector, in KServe's payload-logger format.

Unlike KServe's logger agent (a slow sink back-pressures inference there), logging must never slow
down or fail a prediction: :meth:`PayloadLogger.submit` never blocks, and when the bounded queue is
full the event is dropped and counted. Drops and delivery failures are logged as warnings (the
first at once, then at most one per interval with the counts) and exposed by :meth:`stats`, so a
lossy log is visible, never silent.

One background thread owns one keep-alive ``httpx.Client`` and POSTs the queued events in batches:
CloudEvents' batched content mode (``content-type: application/cloudevents-batch+json``, a JSON array
of events in the JSON format, see :meth:`InferenceEvent.to_structured`), at most ``max_batch``
events and ``max_batch_bytes`` bytes per request. One request and one database transaction per
batch, instead of one per event, is what lets the collector keep up with the model servers. With
``max_batch=1`` it POSTs each event alone in binary mode (``ce-*`` headers, the raw payload as the
body), exactly as KServe's logger agent does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from mlcanary.telemetry.events import BATCH_CONTENT_TYPE, InferenceEvent, encode_batch

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
#: A batch closes at this many events, ...
DEFAULT_MAX_BATCH = 256
#: ... or before its body would pass this size (the collector's default limit is 8 MiB) ...
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
#: ... and the first event of a batch waits at most this long for others to join it.
DEFAULT_LINGER_S = 0.05


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


@dataclass(frozen=True, slots=True)
class _Delivery:
    """What became of the events of one POST (and of its halves, after a 413)."""

    sent: int = 0
    failed: int = 0
    detail: str = ""

    def __add__(self, other: _Delivery) -> _Delivery:
        return _Delivery(self.sent + other.sent, self.failed + other.failed, self.detail or other.detail)


class PayloadLogger:
    """Bounded, non-blocking sender of :class:`InferenceEvent` to a collector URL (an :class:`EventSink`).

    ``submit`` enqueues without blocking; a full queue (``max_queue`` events) or a closed logger
    drops the event. The worker takes up to ``max_batch`` queued events at a time — after the first
    one it waits up to ``linger_s`` for the batch to fill, never while closing — and POSTs them in
    order, split so that no body passes ``max_batch_bytes`` (a single larger event goes alone). A
    connection error, a timeout, a 429 or a 5xx (the collector answers 503 while its database is
    unavailable) is retried, for the whole batch, at most ``max_retries`` times with backoff
    ``min(retry_backoff * 2**attempt, max_backoff)`` seconds, then its events are counted as failed;
    a 413 splits the batch in halves and sends each (a single event is then failed); any other
    non-2xx answer fails the batch at once (the collector rejected it). A 2xx counts every event
    sent except those the collector lists as ``rejected`` (invalid events, counted failed; the
    others of the batch are stored). Events submitted meanwhile wait in the queue, so an outage
    shorter than the retry span loses nothing while the queue has room. Counters only grow, except
    ``pending``; ``enqueued`` - ``sent`` - ``failed`` is what is queued, in flight, or was dropped
    at close. ``close`` drains the queue for up to ``timeout`` seconds, then drops what is left.

    The worker thread starts in the constructor and is a daemon, so a stuck collector cannot keep
    the process alive. ``client`` may be injected (the logger then closes it on ``close``).
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        linger_s: float = DEFAULT_LINGER_S,
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
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be at least 1, got {max_batch_bytes}")
        if linger_s < 0:
            raise ValueError(f"linger_s must not be negative, got {linger_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        self.url = url
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._linger_s = linger_s
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
        self._posts = 0
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
        """Counters ``enqueued``, ``sent``, ``dropped``, ``failed`` (events) and ``posts`` (HTTP
        requests answered 2xx); ``pending`` (queued, not yet taken into a batch); ``capacity``."""
        with self._cond:
            return {
                "enqueued": self._enqueued,
                "sent": self._sent,
                "dropped": self._dropped,
                "failed": self._failed,
                "posts": self._posts,
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
            while (batch := self._take_batch()) is not None:
                for chunk in self._split_by_size(batch):
                    delivery = self._deliver(chunk)
                    with self._cond:
                        self._sent += delivery.sent
                        self._failed += delivery.failed
                        failed = self._failed
                    if delivery.failed:
                        self._fail_warning.record(failed, delivery.detail)
        finally:
            self._client.close()

    def _take_batch(self) -> list[InferenceEvent] | None:
        """Up to ``max_batch`` queued events, oldest first, once one is there; None when closed and empty."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            # Lingering trades a little delay (nobody reads the log within 50 ms) for fuller batches
            # at low rates; under load the queue fills while the previous batch is in flight.
            deadline = time.monotonic() + self._linger_s
            while len(self._queue) < self.max_batch and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]

    def _split_by_size(self, batch: list[InferenceEvent]) -> list[list[tuple[InferenceEvent, bytes]]]:
        """The batch, each event with its encoding, in consecutive chunks under ``max_batch_bytes``."""
        if self.max_batch == 1:
            return [[(event, b"")] for event in batch]
        chunks: list[list[tuple[InferenceEvent, bytes]]] = [[]]
        size = 2  # "[" and "]"; a comma before every event but the first
        for event in batch:
            encoded = event.to_structured()
            if chunks[-1] and size + 1 + len(encoded) > self._max_batch_bytes:
                chunks.append([])
                size = 2
            size += len(encoded) + (1 if chunks[-1] else 0)
            chunks[-1].append((event, encoded))
        return chunks

    def _request(self, chunk: list[tuple[InferenceEvent, bytes]]) -> tuple[bytes, dict[str, str]]:
        if self.max_batch == 1:
            event = chunk[0][0]
            return event.body, event.to_headers()
        return encode_batch([encoded for _event, encoded in chunk]), {"content-type": BATCH_CONTENT_TYPE}

    def _deliver(self, chunk: list[tuple[InferenceEvent, bytes]]) -> _Delivery:
        body, headers = self._request(chunk)
        detail = ""
        for attempt in range(self._max_retries + 1):
            backoff = min(self._retry_backoff * 2 ** min(attempt - 1, 30), self._max_backoff)
            if attempt and self._abort.wait(backoff):
                return _Delivery(failed=len(chunk), detail="logger closed during retry")
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                with self._cond:
                    self._posts += 1
                return _accepted(response, len(chunk))
            detail = f"collector answered HTTP {response.status_code}"
            if response.status_code == 413 and len(chunk) > 1:
                half = len(chunk) // 2
                return self._deliver(chunk[:half]) + self._deliver(chunk[half:])
            if response.status_code != 429 and response.status_code < 500:
                return _Delivery(failed=len(chunk), detail=detail)
        return _Delivery(failed=len(chunk), detail=detail)


def _accepted(response: httpx.Response, events: int) -> _Delivery:
    """A 2xx for ``events`` events: all sent but those the collector's answer lists as rejected."""
    try:
        rejected = response.json().get("rejected") or []
    except (ValueError, AttributeError):
        rejected = []  # a binary-mode answer, or a collector that says nothing more: all stored
    if not isinstance(rejected, list) or not rejected:
        return _Delivery(sent=events)
    failed = min(len(rejected), events)
    first = rejected[0] if isinstance(rejected[0], dict) else {}
    detail = f"collector rejected event {first.get('id')!r} of a batch: {first.get('error')}"
    return _Delivery(sent=events - failed, failed=failed, detail=detail)
