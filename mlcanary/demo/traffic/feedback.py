"""Delayed ground-truth labels: posted to the collector's ``/feedback`` once due, in batches, a
failed batch retried once."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter

import httpx

from mlcanary.demo.traffic.plan import FEEDBACK_BATCH_MAX, FEEDBACK_INTERVAL_S, TrafficPlan


def _retryable(status: int | None) -> bool:
    return status is None or status in (429, 502, 503, 504)


class FeedbackPoster:
    """Posts labels once their due time has come, in batches, retrying a failed batch once."""

    def __init__(self, plan: TrafficPlan, client: httpx.AsyncClient) -> None:
        assert plan.collector_url is not None
        self._url = f"{plan.collector_url}/feedback"
        self._plan = plan
        self._client = client
        self._heap: list[tuple[float, int, str, int, int]] = []
        self._seq = itertools.count()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.errors: Counter[str] = Counter()

    def add(self, request_id: str, label: int, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), request_id, label, 1))

    async def run(self, requests_done: asyncio.Event) -> None:
        """Tick every ``FEEDBACK_INTERVAL_S`` until the requests are done and no label is pending.

        Once the requests are done it waits at most ``feedback_delay_s`` plus two ticks and one retry
        for the labels still pending; what is left then counts as dropped.
        """
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        while True:
            await self._post_due(loop.time())
            if requests_done.is_set():
                if give_up_at is None:
                    give_up_at = loop.time() + self._plan.feedback_delay_s + 3 * FEEDBACK_INTERVAL_S
                if not self._heap:
                    return
                if loop.time() >= give_up_at:
                    self.dropped += len(self._heap)
                    self._heap.clear()
                    return
            await asyncio.sleep(FEEDBACK_INTERVAL_S)

    async def _post_due(self, now: float) -> None:
        due: list[tuple[float, int, str, int, int]] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap))
        for start in range(0, len(due), FEEDBACK_BATCH_MAX):
            await self._post(due[start : start + FEEDBACK_BATCH_MAX], now)

    async def _post(self, batch: list[tuple[float, int, str, int, int]], now: float) -> None:
        body = [{"request_id": rid, "label": label} for _, _, rid, label, _ in batch]
        status: int | None = None
        try:
            response = await self._client.post(self._url, json=body, timeout=self._plan.timeout_s)
            status = response.status_code
        except (httpx.HTTPError, OSError) as exc:
            self.errors[type(exc).__name__] += 1
        else:
            if response.is_success:
                self.sent += len(batch)
                return
            self.errors[f"HTTP {status}"] += 1
        if _retryable(status):
            retry = [item for item in batch if item[4] < 2]
            for _, seq, rid, label, attempt in retry:
                heapq.heappush(self._heap, (now + FEEDBACK_INTERVAL_S, seq, rid, label, attempt + 1))
            self.failed += len(batch) - len(retry)
        else:
            self.failed += len(batch)
