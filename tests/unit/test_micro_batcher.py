"""Micro-batching under concurrency: every request gets its own rows' answers, only failing ones fail.

Property tests at two levels: the batcher alone (a pure NumPy "model", many examples) and the
model server's ASGI app with a real scikit-learn pipeline called by concurrent clients.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcanary.data.schema import infer_schema
from mlcanary.data.synthetic import FEATURES, TARGET, generate_transactions
from mlcanary.serving.local.micro_batcher import BatchingConfig, MicroBatcher
from mlcanary.serving.local.model_server import ServedModel, create_app
from models.pipeline import build_pipeline

POISON = -1


def _predict(rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """A model whose answers identify each row, and that refuses any input holding POISON."""
    if (rows == POISON).any():
        raise ValueError("poisoned row")
    return [("double", rows * 2 + 1), ("pair", np.stack([rows, -rows], axis=1))]


def _combine(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(parts))


requests_strategy = st.lists(
    st.tuples(
        st.lists(st.integers(min_value=-1, max_value=10_000), min_size=1, max_size=6),
        st.integers(min_value=0, max_value=3),  # event-loop turns before the request is ready
    ),
    min_size=1,
    max_size=24,
)


async def _score_all(batcher: MicroBatcher[np.ndarray], requests: list[tuple[list[int], int]]) -> list[Any]:
    async def one(rows: list[int], delay: int) -> Any:
        batcher.receiving()
        for _ in range(delay):
            await asyncio.sleep(0)
        batcher.received()
        try:
            return await batcher.score(np.asarray(rows), len(rows))
        except ValueError as exc:
            return exc

    return await asyncio.gather(*(one(rows, delay) for rows, delay in requests))


@settings(max_examples=150, deadline=None)
@given(requests=requests_strategy, max_rows=st.integers(min_value=1, max_value=16))
def test_each_request_gets_its_own_rows_and_only_poisoned_requests_fail(
    requests: list[tuple[list[int], int]], max_rows: int
) -> None:
    batcher: MicroBatcher[np.ndarray] = MicroBatcher(_combine, _predict, BatchingConfig(max_rows, 5.0))
    results = asyncio.run(_score_all(batcher, requests))
    for (rows, _), result in zip(requests, results, strict=True):
        if POISON in rows:
            assert isinstance(result, ValueError)
            continue
        assert not isinstance(result, Exception), result
        named = dict(result)
        assert named["double"].tolist() == [2 * r + 1 for r in rows]
        assert named["pair"].tolist() == [[r, -r] for r in rows]
    stats = batcher.stats
    assert stats.requests == len(requests)
    assert stats.rows == sum(len(rows) for rows, _ in requests)


def test_concurrent_requests_share_one_model_call_and_a_lone_request_waits_for_nothing() -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        calls.append(len(rows))
        return _predict(rows)

    batcher: MicroBatcher[np.ndarray] = MicroBatcher(_combine, predict, BatchingConfig(64, 5.0))
    asyncio.run(_score_all(batcher, [([i], 0) for i in range(8)]))
    assert calls == [8]
    asyncio.run(_score_all(batcher, [([42], 0)]))
    assert calls == [8, 1]
    assert batcher.stats.largest_batch == 8


def test_batches_respect_the_row_bound() -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        calls.append(len(rows))
        return _predict(rows)

    batcher: MicroBatcher[np.ndarray] = MicroBatcher(_combine, predict, BatchingConfig(5, 5.0))
    asyncio.run(_score_all(batcher, [([i, i + 1], 0) for i in range(6)] + [(list(range(9)), 0)]))
    assert max(calls) == 9  # a single request larger than the bound is scored whole
    assert all(n <= 5 for n in calls if n != 9)
    assert sum(calls) == 21


@pytest.mark.parametrize(("rows", "wait"), [(0, 1.0), (5, -1.0), (5, 1001.0)])
def test_batching_config_refuses_nonsense(rows: int, wait: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        BatchingConfig(rows, wait)


# -- the model server's app, a real pipeline, concurrent clients ---------------------------------


class RefusesLargeAmounts:
    """A real pipeline that raises for any input row above an amount (a model failing on some inputs)."""

    def __init__(self, pipeline: Any, limit: float) -> None:
        self.pipeline = pipeline
        self.limit = limit
        self.classes_ = pipeline.classes_

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if (frame["amount"] > self.limit).any():
            raise RuntimeError("amount out of the model's range")
        return self.pipeline.predict_proba(frame)


class Fitted:
    def __init__(self) -> None:
        frame = generate_transactions(1_500, seed=5)
        self.features = infer_schema(frame, FEATURES)
        self.pipeline = build_pipeline(
            "hist_gradient_boosting",
            {"max_iter": 30},
            numeric=[s.name for s in self.features if s.kind == "numeric"],
            categorical=[s.name for s in self.features if s.kind == "categorical"],
        )
        self.pipeline.fit(frame[list(FEATURES)], frame[TARGET])
        sample = generate_transactions(60, seed=6)[list(FEATURES)]
        self.records = json.loads(sample.to_json(orient="records"))
        self.limit = float(np.quantile(sample["amount"], 0.8))
        self.proba = [float(self.pipeline.predict_proba(pd.DataFrame([row]))[0, 1]) for row in self.records]


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    return Fitted()


request_sets = st.lists(
    st.lists(st.integers(min_value=0, max_value=59), min_size=1, max_size=4), min_size=2, max_size=16
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=request_sets, v2=st.booleans())
def test_the_app_answers_concurrent_requests_with_their_own_rows(
    fitted: Fitted, requests: list[list[int]], v2: bool
) -> None:
    served = ServedModel(
        name="fraud",
        version="3",
        arm="champion",
        predictor=RefusesLargeAmounts(fitted.pipeline, fitted.limit),
        features=fitted.features,
    )
    app = create_app(served, batching=BatchingConfig(max_batch_rows=64, max_wait_ms=5.0))

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:

            async def one(indexes: list[int], k: int) -> httpx.Response:
                rows = [fitted.records[i] for i in indexes]
                if v2 and k % 2:
                    inputs = [
                        {
                            "name": spec.name,
                            "shape": [len(rows)],
                            "datatype": _datatype(spec.dtype),
                            "data": [row[spec.name] for row in rows],
                        }
                        for spec in fitted.features
                    ]
                    return await client.post("/v2/models/fraud/infer", json={"inputs": inputs})
                return await client.post("/v1/models/fraud:predict", json={"instances": rows})

            return await asyncio.gather(*(one(indexes, k) for k, indexes in enumerate(requests)))

    responses = asyncio.run(send_all())
    for k, (indexes, response) in enumerate(zip(requests, responses, strict=True)):
        refused = any(fitted.records[i]["amount"] > fitted.limit for i in indexes)
        if refused:
            assert response.status_code == 500
            assert "amount out of the model's range" in response.json()["error"]
            continue
        assert response.status_code == 200, response.text
        expected = [fitted.proba[i] for i in indexes]
        if v2 and k % 2:
            outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
            assert [pair[1] for pair in np.reshape(outputs["predict_proba"], (-1, 2)).tolist()] == expected
        else:
            assert response.json()["probabilities"] == expected


def _datatype(dtype: str) -> str:
    return {"double": "FP64", "long": "INT64", "string": "BYTES", "boolean": "BOOL"}[dtype]
