"""What one request of a traffic run looks like on the wire, in either protocol, and what is read
back from its answer: a KServe V1 ``instances`` body or an Open Inference (V2) ``inputs`` body, and
the first prediction and probability of a V1 (``predictions`` / ``probabilities``) or V2
(``outputs[].data``) response."""

from __future__ import annotations

import math
from typing import Any, Literal

Protocol = Literal["v1", "v2"]

_V2_TYPES = ((bool, "BOOL"), (int, "INT64"), (float, "FP64"), (str, "BYTES"))


def v2_request(row: dict[str, Any]) -> dict[str, Any]:
    """One row as an Open Inference (V2) request: a tensor per column, decoded as a DataFrame
    (``content_type: pd``) by MLServer's MLflow runtime and by the local model servers alike."""
    inputs = []
    for name, value in row.items():
        datatype = next((t for kind, t in _V2_TYPES if isinstance(value, kind)), "BYTES")
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs, "parameters": {"content_type": "pd"}}


def request_body(row: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """The JSON body predicting ``row`` in ``protocol``."""
    return v2_request(row) if protocol == "v2" else {"instances": [row]}


def first_number(payload: Any, key: str) -> float | None:
    """The first element of ``payload[key]`` when it is a finite number, else ``None``."""
    if not isinstance(payload, dict):
        return None
    values = payload.get(key)
    if not isinstance(values, list) or not values:
        return None
    value = values[0]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def prediction_of(payload: Any) -> float | None:
    """The first prediction of a V1 response, else the first number of a V2 response's outputs."""
    prediction = first_number(payload, "predictions")
    if prediction is None and isinstance(payload, dict) and isinstance(payload.get("outputs"), list):
        prediction = next(
            (v for v in (first_number(o, "data") for o in payload["outputs"]) if v is not None), None
        )
    return prediction


def probability_of(payload: Any) -> float | None:
    """The first positive-class probability of a V1 response (the local model servers' extension)."""
    return first_number(payload, "probabilities")
