"""Adaptive micro-batching: concurrent requests scored in one model call, each given its own rows.

A scikit-learn pipeline costs about as much for 32 rows as for one (the per-call overhead of
pandas and the estimators dominates a single row), so a server that calls the model once per
request spends most of its CPU on that overhead as soon as requests overlap. The
:class:`MicroBatcher` runs on the server's event loop and calls the model there, synchronously:

* a request that finds nothing else queued or being received is scored at once — one client
  sending one request at a time waits for nothing;
* while the model is busy, the requests that arrive meanwhile queue up and are scored together in
  the next call (up to ``max_batch_rows`` rows): the batch size adapts to the load by itself;
* a batch about to be scored waits (at most ``max_wait_ms``, yielding to the event loop) for
  requests whose bodies are already being read, so requests that arrived together are scored
  together.

Each request gets its own slice of every output. If the batched call raises, or returns outputs
whose rows do not match the rows sent, every request of the batch is scored alone, so only the
requests whose own rows make the model fail get an error (that error, as the model raised it).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

Part = TypeVar("Part")
Outputs = list[tuple[str, np.ndarray]]

DEFAULT_MAX_BATCH_ROWS = 64
DEFAULT_MAX_WAIT_MS = 2.0


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are batched: at most ``max_batch_rows`` rows per model call (1 turns batching
    off: one call per request; a single request larger than the limit is still scored whole), and
    at most ``max_wait_ms`` spent waiting for requests already being received before a call."""

    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, got {self.max_batch_rows}")
        if not 0.0 <= self.max_wait_ms <= 1000.0:
            raise ValueError(f"max_wait_ms must be within [0, 1000], got {self.max_wait_ms}")


@dataclass
class _Item(Generic[Part]):
    part: Part
    rows: int
    future: asyncio.Future[Outputs]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Counters since start: model calls, requests and rows scored, and batches that failed or
    did not split and were scored request by request."""

    calls: int = 0
    requests: int = 0
    rows: int = 0
    split_retries: int = 0
    largest_batch: int = 0


class MicroBatcher(Generic[Part]):
    """Batches :meth:`score` calls made on one event loop into calls of ``predict``.

    ``combine`` turns the parts of a batch (in order) into one model input; ``predict`` scores it
    and returns named outputs whose first dimension is the row count. Both run on the event loop's
    thread. Requests being received call :meth:`receiving` first and :meth:`received` when their
    part is ready or they gave up, so a batch can wait for them.
    """

    def __init__(
        self,
        combine: Callable[[Sequence[Part]], Any],
        predict: Callable[[Any], Outputs],
        config: BatchingConfig | None = None,
    ) -> None:
        self.combine = combine
        self.predict = predict
        self.config = config or BatchingConfig()
        self.stats = BatchStats()
        self._queue: deque[_Item[Part]] = deque()
        self._queued_rows = 0
        self._receiving = 0
        self._scheduled = False

    def receiving(self) -> None:
        """A request started arriving; it will call :meth:`score` or :meth:`received`."""
        self._receiving += 1

    def received(self) -> None:
        """A request counted by :meth:`receiving` is decoded (or failed before scoring)."""
        self._receiving = max(0, self._receiving - 1)

    async def score(self, part: Part, rows: int) -> Outputs:
        """The outputs for ``part``'s ``rows`` rows; raises what the model raised on them."""
        loop = asyncio.get_running_loop()
        item: _Item[Part] = _Item(part, rows, loop.create_future())
        self._queue.append(item)
        self._queued_rows += rows
        self._schedule(loop)
        return await item.future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if not self._queue:
            return
        waited_ms = (time.perf_counter() - self._queue[0].queued_at) * 1000.0
        if (
            self._receiving > 0
            and self._queued_rows < self.config.max_batch_rows
            and waited_ms < self.config.max_wait_ms
        ):
            # Requests whose bodies are being read join this batch: let the loop run them first.
            self._schedule(loop)
            return
        batch = self._take()
        self._run(batch)
        if self._queue:
            self._schedule(loop)

    def _take(self) -> list[_Item[Part]]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self.config.max_batch_rows:
            item = self._queue.popleft()
            batch.append(item)
            rows += item.rows
        self._queued_rows -= rows
        return batch

    def _run(self, batch: list[_Item[Part]]) -> None:
        live = [item for item in batch if not item.future.done()]  # a cancelled request is skipped
        if not live:
            return
        stats = self.stats
        stats.requests += len(live)
        stats.rows += sum(item.rows for item in live)
        stats.largest_batch = max(stats.largest_batch, len(live))
        if len(live) == 1:
            self._run_one(live[0])
            return
        total = sum(item.rows for item in live)
        try:
            stats.calls += 1
            outputs = self.predict(self.combine([item.part for item in live]))
        except Exception:
            outputs = None
        if outputs is None or not _splittable(outputs, total):
            stats.split_retries += 1
            for item in live:
                self._run_one(item)
            return
        start = 0
        for item in live:
            end = start + item.rows
            item.future.set_result([(name, array[start:end]) for name, array in outputs])
            start = end

    def _run_one(self, item: _Item[Part]) -> None:
        self.stats.calls += 1
        try:
            outputs = self.predict(self.combine([item.part]))
        except Exception as exc:
            item.future.set_exception(exc)
        else:
            item.future.set_result(outputs)


def _splittable(outputs: Outputs, rows: int) -> bool:
    return bool(outputs) and all(
        isinstance(array, np.ndarray) and array.ndim >= 1 and array.shape[0] == rows for _, array in outputs
    )
