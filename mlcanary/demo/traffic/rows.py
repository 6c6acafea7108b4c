"""The rows a run sends — generated lazily chunk by chunk (the next chunk in a worker thread), or
replayed from the user's file (:class:`FileRows`, ``traffic --data``) — and which of them get a
ground-truth label."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcanary.data.loader import DataError, read_table
from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
from mlcanary.demo.traffic.plan import CHUNK_ROWS, TrafficPlan, chunk_seed


def feedback_mask(seed: int, chunk_index: int, share: float) -> list[bool]:
    """Which rows of a chunk get a label; its own stream so the share does not change the rows."""
    if share <= 0.0:
        return [False] * CHUNK_ROWS
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk_index, 1]))
    return (rng.random(CHUNK_ROWS) < share).tolist()


@dataclass(frozen=True)
class Chunk:
    rows: list[dict[str, Any]]
    labels: list[int]
    wants_label: list[bool]


@dataclass(frozen=True)
class FileRows:
    """The rows of a user's file to replay: features as JSON-ready dicts (missing values as null)
    and, with a target column, the 0/1 label of each row (None where it is not 0 or 1)."""

    rows: list[dict[str, Any]]
    labels: list[int | None]

    @classmethod
    def read(cls, path: str, target: str | None) -> FileRows:
        """Load ``path`` (``.csv``, ``.parquet``); ``ValueError`` names what is wrong."""
        try:
            frame = read_table(Path(path))
        except DataError as exc:
            raise ValueError(f"--data {exc}") from None
        if len(frame) == 0:
            raise ValueError(f"--data {path}: the file has no rows")
        labels: list[int | None] = [None] * len(frame)
        if target is not None:
            if target not in frame.columns:
                raise ValueError(
                    f"--target {target!r} is not a column of {path} "
                    f"(columns: {', '.join(map(str, frame.columns))})"
                )
            labels = [
                int(v) if isinstance(v, int | float | bool) and v in (0, 1) else None
                for v in frame[target].tolist()
            ]
            frame = frame.drop(columns=[target])
        features = frame.astype(object).where(frame.notna(), None)
        rows = [
            {str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in features.to_dict(orient="records")
        ]
        return cls(rows, labels)


def build_chunk(plan: TrafficPlan, chunk_index: int, table: FileRows | None = None) -> Chunk:
    if table is not None:
        count = len(table.rows)
        positions = [(chunk_index * CHUNK_ROWS + i) % count for i in range(CHUNK_ROWS)]
        mask = feedback_mask(plan.seed, chunk_index, plan.feedback_share)
        labels = [table.labels[p] for p in positions]
        return Chunk(
            rows=[table.rows[p] for p in positions],
            labels=[-1 if label is None else label for label in labels],
            wants_label=[m and label is not None for m, label in zip(mask, labels, strict=True)],
        )
    frame = generate_transactions(CHUNK_ROWS, seed=chunk_seed(plan.seed, chunk_index), knobs=plan.knobs)
    # to_dict gives Python scalars, which json.dumps and the model server's strict types accept.
    return Chunk(
        rows=frame[list(FEATURES)].to_dict(orient="records"),
        labels=[int(v) for v in frame[TARGET].tolist()],
        wants_label=feedback_mask(plan.seed, chunk_index, plan.feedback_share),
    )


class RowSource:
    """Rows in index order; the next chunk is generated in a worker thread while this one is sent."""

    def __init__(self, plan: TrafficPlan, total: int) -> None:
        self._plan = plan
        self._table = FileRows.read(plan.data_path, plan.target) if plan.data_path else None
        self._chunks = math.ceil(total / CHUNK_ROWS)
        self._index = -1
        self._current: Chunk | None = None
        self._next: asyncio.Task[Chunk] | None = None

    def _prefetch(self, chunk_index: int) -> None:
        self._next = (
            asyncio.create_task(asyncio.to_thread(build_chunk, self._plan, chunk_index, self._table))
            if chunk_index < self._chunks
            else None
        )

    async def start(self) -> None:
        self._prefetch(0)

    async def get(self, row_index: int) -> tuple[dict[str, Any], int, bool]:
        chunk_index, offset = divmod(row_index, CHUNK_ROWS)
        if chunk_index != self._index:
            if chunk_index != self._index + 1 or self._next is None:
                raise RuntimeError("rows must be read in order")
            self._current = await self._next
            self._index = chunk_index
            self._prefetch(chunk_index + 1)
        assert self._current is not None
        chunk = self._current
        return chunk.rows[offset], chunk.labels[offset], chunk.wants_label[offset]

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
