"""A traffic request on the wire in V1 and V2, and the prediction read back from either answer."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlcanary.demo.traffic.wire import prediction_of, probability_of, request_body


def test_v1_wraps_the_row_in_instances() -> None:
    assert request_body({"amount": 1.5}, "v1") == {"instances": [{"amount": 1.5}]}


def test_v2_sends_one_typed_tensor_per_column_decoded_as_a_dataframe() -> None:
    body = request_body({"flag": True, "count": 3, "amount": 1.5, "merchant": "food"}, "v2")
    assert body["parameters"] == {"content_type": "pd"}
    assert [(t["name"], t["datatype"], t["shape"], t["data"]) for t in body["inputs"]] == [
        ("flag", "BOOL", [1], [True]),  # a bool is not an INT64, though Python says it is an int
        ("count", "INT64", [1], [3]),
        ("amount", "FP64", [1], [1.5]),
        ("merchant", "BYTES", [1], ["food"]),
    ]


@pytest.mark.parametrize(
    ("payload", "prediction", "probability"),
    [
        ({"predictions": [1], "probabilities": [0.9]}, 1.0, 0.9),
        ({"outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [0]}]}, 0.0, None),
        ({"outputs": [{"name": "x", "data": ["a"]}, {"name": "predict", "data": [1]}]}, 1.0, None),
        ({"predictions": [math.inf]}, None, None),
        ({"predictions": [True]}, None, None),
        ("not json", None, None),
    ],
)
def test_the_first_finite_number_is_read_from_v1_or_v2(
    payload: Any, prediction: float | None, probability: float | None
) -> None:
    assert prediction_of(payload) == prediction
    assert probability_of(payload) == probability
