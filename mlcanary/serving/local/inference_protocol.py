"""Parsing and validation of KServe V1 and V2 (Open Inference Protocol) requests; response bodies.

Pure functions: bytes or decoded JSON in, a typed ``pandas.DataFrame`` (one column per feature, in
the model's feature order) or a :class:`RequestError` out. Nothing here touches the network or the
model.

Status codes, applied consistently (every error names the field, instance or input at fault):

* **400 Bad Request** — the structure is wrong: the body is empty or not JSON, not an object, lacks
  ``instances`` / ``inputs``, has no instances, an instance that is neither an object nor a list,
  a list instance of the wrong length, unknown or missing features, a V2 input without
  ``name``/``shape``/``datatype``/``data``, an unknown V2 datatype, a shape that does not match the
  data, duplicate inputs, inputs of different lengths.
* **413 Content Too Large** — more instances (rows) than ``max_instances`` (the body-size limit is
  enforced by the server before parsing, with the same status).
* **422 Unprocessable Content** — the structure is fine but a value is not acceptable for its
  feature: wrong JSON type (a string for a number, a number for a string, a boolean for a number),
  a non-integral number for a ``long`` feature, an integer outside int64, ``null``, ``NaN`` or
  ``Infinity`` (Python's ``json`` accepts those literals, so they are rejected here), or a V2
  datatype that does not fit the feature's dtype.

Dtype rules follow :class:`~mlcanary.data.schema.FeatureSpec`: ``double`` takes any finite JSON
number, ``long`` takes integral numbers (``3.0`` counts as ``3``), ``boolean`` takes ``true``/``false``
only, ``string`` takes strings only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlcanary.data.schema import FeatureSpec

BAD_REQUEST = 400
CONTENT_TOO_LARGE = 413
UNPROCESSABLE = 422
DEFAULT_MAX_INSTANCES = 10_000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MAX_NAMES_IN_MESSAGE = 10
_MAX_REPR = 40

_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
V2_DATATYPES: frozenset[str] = _FLOAT_TYPES | _INT_TYPES | {"BOOL", "BYTES"}
"""Every tensor datatype of the Open Inference Protocol."""

_ACCEPTED_DATATYPES: dict[str, frozenset[str]] = {
    "double": _FLOAT_TYPES | _INT_TYPES,
    "long": _INT_TYPES,
    "boolean": frozenset({"BOOL"}),
    "string": frozenset({"BYTES"}),
}
V2_DATATYPE_OF_DTYPE: dict[str, str] = {
    "double": "FP64",
    "long": "INT64",
    "boolean": "BOOL",
    "string": "BYTES",
}
"""The datatype a V2 input should declare for each feature dtype (reported in model metadata)."""

_NUMPY_DTYPE: dict[str, Any] = {"double": np.float64, "long": np.int64, "boolean": np.bool_, "string": object}


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, ``message`` the client-facing text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class V2Request:
    """A parsed V2 infer request: the client's optional ``id`` and the feature frame."""

    id: str | None
    frame: pd.DataFrame


def decode_json(body: bytes) -> Any:
    """Decode a request body; raise a 400 :class:`RequestError` if it is empty or not JSON.

    ``NaN``/``Infinity`` literals decode to floats here and are rejected (422) where they are used,
    so the message can name the field. orjson decodes; what it refuses (those literals, integers
    beyond 64 bits, invalid JSON) is decoded again by the standard library, which accepts the
    first two and words the error for the third.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    if not body.strip():
        raise RequestError(BAD_REQUEST, "request body is empty; expected a JSON object")
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(BAD_REQUEST, "request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(BAD_REQUEST, f"request body is not valid JSON: {exc}") from None


def encode_json(payload: Any) -> bytes:
    """Compact JSON bytes (NumPy arrays and scalars allowed); raises ``ValueError`` on NaN/Infinity
    rather than emitting invalid JSON."""
    encoded = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    # orjson writes a non-finite float as null: only then is the payload walked to find one.
    if b"null" in encoded and _has_non_finite(payload):
        raise ValueError("Out of range float values are not JSON compliant")
    return encoded


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return not bool(np.isfinite(value).all())
    return False


def parse_v1_request(
    payload: Any,
    features: Sequence[FeatureSpec],
    *,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    optional: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Feature frame from a V1 ``{"instances": [...]}`` body.

    Each instance is an object ``{feature: value}`` with exactly the model's features, or a list of
    values in feature order. Other top-level keys are ignored. Features named in ``optional`` (not
    required by the model's signature) may be null.
    """
    return frame_of(
        features, parse_v1_columns(payload, features, max_instances=max_instances, optional=optional)
    )


def parse_v1_columns(
    payload: Any,
    features: Sequence[FeatureSpec],
    *,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    optional: frozenset[str] = frozenset(),
) -> list[list[Any]]:
    """The checked values of a V1 body (as :func:`parse_v1_request`), one list per feature in order:
    what the model server batches before it builds one frame for several requests."""
    if not isinstance(payload, dict):
        raise RequestError(BAD_REQUEST, f"request body must be a JSON object, got {_json_type(payload)}")
    if "instances" not in payload:
        raise RequestError(BAD_REQUEST, 'request body must have an "instances" list')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError(BAD_REQUEST, f'"instances" must be a list, got {_json_type(instances)}')
    if not instances:
        raise RequestError(BAD_REQUEST, '"instances" is empty; send at least one instance')
    _check_count(len(instances), max_instances)

    names = [spec.name for spec in features]
    known = set(names)
    columns: list[list[Any]] = [[] for _ in features]
    for i, instance in enumerate(instances):
        if isinstance(instance, dict):
            unknown = [key for key in instance if key not in known]
            if unknown:
                raise RequestError(BAD_REQUEST, f"instances[{i}] has unknown feature(s): {_names(unknown)}")
            missing = [name for name in names if name not in instance]
            if missing:
                raise RequestError(BAD_REQUEST, f"instances[{i}] is missing feature(s): {_names(missing)}")
            for column, spec in zip(columns, features, strict=True):
                where = f"instances[{i}].{spec.name}"
                column.append(_coerce(instance[spec.name], spec, where, optional))
        elif isinstance(instance, list):
            if len(instance) != len(features):
                raise RequestError(
                    BAD_REQUEST,
                    f"instances[{i}] has {len(instance)} values; expected {len(features)} "
                    f"in feature order: {', '.join(names)}",
                )
            for j, (column, spec, value) in enumerate(zip(columns, features, instance, strict=True)):
                column.append(_coerce(value, spec, f"instances[{i}][{j}] ({spec.name})", optional))
        else:
            raise RequestError(
                BAD_REQUEST,
                f"instances[{i}] must be an object of features or a list of values, "
                f"got {_json_type(instance)}",
            )
    return columns


def parse_v2_request(
    payload: Any,
    features: Sequence[FeatureSpec],
    *,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    optional: frozenset[str] = frozenset(),
) -> V2Request:
    """Feature frame from a V2 infer body with one input per feature column (MLServer pandas codec).

    Each input is ``{"name": feature, "shape": [n] or [n, 1], "datatype": ..., "data": [...]}``;
    ``data`` may be flat or nested row-major. ``parameters`` and requested ``outputs`` are ignored.
    """
    if not isinstance(payload, dict):
        raise RequestError(BAD_REQUEST, f"request body must be a JSON object, got {_json_type(payload)}")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(BAD_REQUEST, f'"id" must be a string, got {_json_type(request_id)}')
    if "inputs" not in payload:
        raise RequestError(BAD_REQUEST, 'request body must have an "inputs" list')
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(BAD_REQUEST, f'"inputs" must be a list, got {_json_type(inputs)}')
    if not inputs:
        raise RequestError(BAD_REQUEST, '"inputs" is empty; send one input per feature')

    by_name = {spec.name: spec for spec in features}
    seen: dict[str, tuple[int, list[Any]]] = {}
    unknown: list[str] = []
    for k, tensor in enumerate(inputs):
        where = f"inputs[{k}]"
        if not isinstance(tensor, dict):
            raise RequestError(BAD_REQUEST, f"{where} must be an object, got {_json_type(tensor)}")
        absent = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
        if absent:
            raise RequestError(BAD_REQUEST, f"{where} is missing {', '.join(absent)}")
        name = tensor["name"]
        if not isinstance(name, str):
            raise RequestError(BAD_REQUEST, f"{where}.name must be a string, got {_json_type(name)}")
        where = f"inputs[{k}] ({name})"
        if name in seen:
            raise RequestError(BAD_REQUEST, f"{where} duplicates inputs[{seen[name][0]}]")
        if name not in by_name:
            unknown.append(name)
            continue
        seen[name] = (k, _v2_column(tensor, by_name[name], where, max_instances, optional))
    if unknown:
        raise RequestError(BAD_REQUEST, f"unknown input(s) (not features of this model): {_names(unknown)}")
    missing = [spec.name for spec in features if spec.name not in seen]
    if missing:
        raise RequestError(BAD_REQUEST, f"missing input(s) for feature(s): {_names(missing)}")

    lengths = {name: len(column) for name, (_, column) in seen.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise RequestError(BAD_REQUEST, f"inputs have different numbers of rows ({detail})")
    if next(iter(lengths.values())) == 0:
        raise RequestError(BAD_REQUEST, "inputs have no rows; send at least one")
    return V2Request(id=request_id, frame=frame_of(features, [seen[spec.name][1] for spec in features]))


def v1_response_body(
    *, model: str, version: str, arm: str, labels: Sequence[int], probabilities: Sequence[float]
) -> dict[str, Any]:
    """V1 predict response: labels under ``predictions`` (KServe's key) plus P(positive class)."""
    return {
        "predictions": list(labels),
        "probabilities": list(probabilities),
        "model_name": model,
        "model_version": version,
        "arm": arm,
    }


def v2_response_body(
    *, model: str, version: str, request_id: str, labels: Sequence[int], probabilities: Sequence[float]
) -> dict[str, Any]:
    """V2 infer response with outputs ``predict`` (INT64 labels) and ``predict_proba`` (FP64 P(positive))."""
    n = len(labels)
    return {
        "model_name": model,
        "model_version": version,
        "id": request_id,
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [n], "data": list(labels)},
            {"name": "predict_proba", "datatype": "FP64", "shape": [n], "data": list(probabilities)},
        ],
    }


def v2_metadata_body(
    *, model: str, version: str, arm: str, features: Sequence[FeatureSpec]
) -> dict[str, Any]:
    """V2 model metadata: one input per feature (shape ``[-1]``), the two outputs, and the arm."""
    return {
        "name": model,
        "versions": [version],
        "platform": "sklearn",
        "inputs": [
            {"name": spec.name, "datatype": V2_DATATYPE_OF_DTYPE[spec.dtype], "shape": [-1]}
            for spec in features
        ],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1]},
        ],
        "parameters": {"arm": arm},
    }


def _v2_column(
    tensor: dict[str, Any],
    spec: FeatureSpec,
    where: str,
    max_instances: int,
    optional: frozenset[str] = frozenset(),
) -> list[Any]:
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise RequestError(
            BAD_REQUEST,
            f"{where}.datatype {_short(datatype)} is not an Open Inference Protocol datatype "
            f"({', '.join(sorted(V2_DATATYPES))})",
        )
    if datatype not in _ACCEPTED_DATATYPES[spec.dtype]:
        raise RequestError(
            UNPROCESSABLE,
            f"{where}.datatype {datatype} does not fit feature {spec.name!r} of dtype {spec.dtype}; "
            f"send {V2_DATATYPE_OF_DTYPE[spec.dtype]}",
        )
    shape = tensor["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(
            BAD_REQUEST, f"{where}.shape must be a list of non-negative integers, got {_short(shape)}"
        )
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(BAD_REQUEST, f"{where}.shape must be [n] or [n, 1] (one column), got {shape}")
    rows = shape[0]
    _check_count(rows, max_instances)
    data = tensor["data"]
    if not isinstance(data, list):
        raise RequestError(BAD_REQUEST, f"{where}.data must be a list, got {_json_type(data)}")
    values = flatten(data)
    if len(values) != rows:
        raise RequestError(
            BAD_REQUEST, f"{where}.data has {len(values)} values but shape {shape} needs {rows}"
        )
    # An integer datatype promises integers even when the feature is a double.
    rule = _coerce_long if datatype in _INT_TYPES else _COERCE[spec.dtype]
    nullable = spec.name in optional
    column = [
        None if value is None and nullable else rule(value, spec, f"{where}.data[{j}]")
        for j, value in enumerate(values)
    ]
    if spec.dtype == "double":
        column = [math.nan if value is None else float(value) for value in column]
    return column


def flatten(data: list[Any]) -> list[Any]:
    """The values of a nested list, row-major (``data`` itself when it is flat already)."""
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _check_count(count: int, max_instances: int) -> None:
    if count > max_instances:
        raise RequestError(
            CONTENT_TOO_LARGE, f"{count} instances exceed the limit of {max_instances} per request"
        )


def frame_of(features: Sequence[FeatureSpec], columns: list[list[Any]]) -> pd.DataFrame:
    """A frame with one typed column per feature (nulls kept: NaN for doubles, None otherwise).

    Built from one NumPy array per column without copying: several times faster than a Series per
    column, which matters when a single-row request is scored.
    """
    arrays = {}
    for spec, column in zip(features, columns, strict=True):
        dtype = _NUMPY_DTYPE[spec.dtype]
        if spec.dtype != "double" and any(value is None for value in column):
            dtype = object
        array = np.empty(len(column), dtype=dtype)
        array[:] = column
        arrays[spec.name] = array
    return pd.DataFrame(arrays, copy=False)


def coerce_value(value: Any, spec: FeatureSpec, where: str, optional: frozenset[str] = frozenset()) -> Any:
    """``value`` checked and converted for ``spec`` (a :class:`RequestError` says what is wrong)."""
    if value is None and spec.name in optional:
        return math.nan if spec.dtype == "double" else None
    return _COERCE[spec.dtype](value, spec, where)


_coerce = coerce_value


def _reject_missing(value: Any, spec: FeatureSpec, where: str) -> None:
    if value is None:
        raise RequestError(UNPROCESSABLE, f"{where}: null is not allowed; {spec.name!r} needs a {spec.dtype}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(UNPROCESSABLE, f"{where}: {_short(value)} is not allowed; values must be finite")


def _coerce_double(value: Any, spec: FeatureSpec, where: str) -> float:
    _reject_missing(value, spec, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            UNPROCESSABLE, f"{where}: expected a number for {spec.dtype} feature, got {_typed(value)}"
        )
    try:
        result = float(value)
    except OverflowError:
        raise RequestError(UNPROCESSABLE, f"{where}: {_short(value)} is out of range for a double") from None
    if not math.isfinite(result):
        raise RequestError(UNPROCESSABLE, f"{where}: {_short(value)} is out of range for a double")
    return result


def _coerce_long(value: Any, spec: FeatureSpec, where: str) -> int:
    _reject_missing(value, spec, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(UNPROCESSABLE, f"{where}: expected an integer, got {_typed(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise RequestError(UNPROCESSABLE, f"{where}: expected an integer, got non-integral {value!r}")
        value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise RequestError(UNPROCESSABLE, f"{where}: {_short(value)} is out of range for a 64-bit integer")
    return value


def _coerce_boolean(value: Any, spec: FeatureSpec, where: str) -> bool:
    _reject_missing(value, spec, where)
    if not isinstance(value, bool):
        raise RequestError(UNPROCESSABLE, f"{where}: expected true or false, got {_typed(value)}")
    return value


def _coerce_string(value: Any, spec: FeatureSpec, where: str) -> str:
    _reject_missing(value, spec, where)
    if not isinstance(value, str):
        raise RequestError(UNPROCESSABLE, f"{where}: expected a string, got {_typed(value)}")
    return value


_COERCE: dict[str, Callable[[Any, FeatureSpec, str], Any]] = {
    "double": _coerce_double,
    "long": _coerce_long,
    "boolean": _coerce_boolean,
    "string": _coerce_string,
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _typed(value: Any) -> str:
    return f"{_json_type(value)} {_short(value)}"


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str | bool | int | float) or value is None else repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(_short(name) for name in names[:_MAX_NAMES_IN_MESSAGE])
    more = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")
