"""Requests decoded for a model's signature, and answers encoded like MLServer's MLflow runtime.

Requests (pure; :class:`RequestError` with the status of :mod:`inference_protocol`):

* V2 with ``parameters.content_type`` ``pd`` (one input per column, MLServer's pandas codec) or
  ``np`` (a single tensor), defaulting to the model's own (``pd`` for column-based signatures,
  ``np`` for tensor-based ones, as MLServer sets it from the signature). A column-based model also
  takes a single 2-D tensor ``[n, columns]`` whose values are in column order.
* V1 ``instances``: objects or lists per row (columns), or nested lists per row (a tensor).

Answers: each output of the model (:func:`mlcanary.registry.model_loader.named_outputs`) becomes one V2
output tensor named as MLServer names it, with the batch dimension first (``[n]`` becomes
``[n, 1]``) and the datatype of its NumPy dtype (text is ``BYTES``). A request listing
``outputs`` gets only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlcanary.data.model_inputs import InputSchema, TensorInput
from mlcanary.data.schema import FeatureSpec
from mlcanary.serving.local.inference_protocol import (
    BAD_REQUEST,
    UNPROCESSABLE,
    V2_DATATYPE_OF_DTYPE,
    V2_DATATYPES,
    RequestError,
    coerce_value,
    flatten,
    frame_of,
    parse_v1_columns,
    parse_v2_request,
)

_FLOATS = frozenset({"FP16", "FP32", "FP64"})
_INTS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_ACCEPTS: dict[str, frozenset[str]] = {
    "f": _FLOATS | _INTS,
    "i": _INTS,
    "u": _INTS,
    "b": frozenset({"BOOL"}),
}
_DATATYPE_OF_KIND = {"b": "BOOL", "O": "BYTES", "U": "BYTES", "S": "BYTES"}
_CONTENT_TYPES = ("pd", "np")


@dataclass(frozen=True)
class ColumnValues:
    """The checked values of a column-based request, one list per feature in signature order, not
    yet a DataFrame: the model server builds one frame for a whole batch of requests
    (:func:`model_input`)."""

    features: tuple[FeatureSpec, ...]
    columns: list[list[Any]]


ModelData = pd.DataFrame | np.ndarray | ColumnValues


@dataclass(frozen=True)
class DecodedRequest:
    """A request ready for the model: ``data`` (a DataFrame, an array or :class:`ColumnValues`; pass
    it through :func:`model_input`), its row count, the client's V2 ``id`` and the output names it
    asked for (None: all)."""

    data: ModelData
    rows: int
    id: str | None = None
    outputs: tuple[str, ...] | None = None


def model_input(parts: Sequence[ModelData]) -> pd.DataFrame | np.ndarray:
    """One model input holding the rows of ``parts`` in order (decoded for the same schema).

    Column values are concatenated before one frame is built; arrays are concatenated; frames
    (V2 requests) are concatenated with a fresh index.
    """
    if not parts:
        raise ValueError("model_input needs at least one part")
    first = parts[0]
    if all(isinstance(part, ColumnValues) for part in parts):
        assert isinstance(first, ColumnValues)
        if len(parts) == 1:
            return frame_of(first.features, first.columns)
        merged: list[list[Any]] = [[] for _ in first.features]
        for part in parts:
            assert isinstance(part, ColumnValues)
            for into, column in zip(merged, part.columns, strict=True):
                into.extend(column)
        return frame_of(first.features, merged)
    if all(isinstance(part, np.ndarray) for part in parts):
        return first if len(parts) == 1 else np.concatenate(parts)  # type: ignore[return-value,arg-type]
    frames = [
        frame_of(part.features, part.columns) if isinstance(part, ColumnValues) else part for part in parts
    ]
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _json_kind(value: Any) -> str:
    return type(value).__name__


def _requested_outputs(payload: dict[str, Any]) -> tuple[str, ...] | None:
    requested = payload.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in requested
    ):
        raise RequestError(BAD_REQUEST, '"outputs" must be a list of objects with a "name"')
    return tuple(item["name"] for item in requested)


def _content_type(payload: dict[str, Any], schema: InputSchema) -> str:
    parameters = payload.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(BAD_REQUEST, f'"parameters" must be an object, got {_json_kind(parameters)}')
    given = (parameters or {}).get("content_type")
    if given is None:
        return schema.content_type
    if given not in _CONTENT_TYPES:
        raise RequestError(
            BAD_REQUEST,
            f"content_type {given!r} is not supported; send 'pd' (one input per column) or 'np' (one tensor)",
        )
    return str(given)


def parse_v2(payload: Any, schema: InputSchema, *, max_instances: int) -> DecodedRequest:
    """Decode a V2 infer request for ``schema`` (see the module docstring)."""
    if not isinstance(payload, dict):
        raise RequestError(BAD_REQUEST, f"request body must be a JSON object, got {_json_kind(payload)}")
    content_type = _content_type(payload, schema)
    outputs = _requested_outputs(payload)
    inputs = payload.get("inputs")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(BAD_REQUEST, f'"id" must be a string, got {_json_kind(request_id)}')
    if schema.kind == "tensor":
        assert schema.tensor is not None
        array = _single_tensor(inputs, schema.tensor, max_instances)
        return DecodedRequest(array, int(array.shape[0]), request_id, outputs)
    names = {spec.name for spec in schema.columns}
    single = (
        isinstance(inputs, list)
        and len(inputs) == 1
        and isinstance(inputs[0], dict)
        and inputs[0].get("name") not in names
    )
    if content_type == "np" or single:
        frame = _positional_frame(inputs, schema, max_instances)
        return DecodedRequest(frame, len(frame), request_id, outputs)
    parsed = parse_v2_request(payload, schema.columns, max_instances=max_instances, optional=schema.optional)
    return DecodedRequest(parsed.frame, len(parsed.frame), parsed.id, outputs)


def parse_v1(payload: Any, schema: InputSchema, *, max_instances: int) -> DecodedRequest:
    """Decode a V1 ``instances`` request for ``schema``."""
    if schema.kind == "columns":
        columns = parse_v1_columns(
            payload, schema.columns, max_instances=max_instances, optional=schema.optional
        )
        return DecodedRequest(ColumnValues(schema.columns, columns), len(columns[0]))
    assert schema.tensor is not None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("instances"), list)
        or not payload["instances"]
    ):
        raise RequestError(BAD_REQUEST, 'request body must be an object with a non-empty "instances" list')
    instances = payload["instances"]
    if len(instances) > max_instances:
        raise RequestError(413, f"{len(instances)} instances exceed the limit of {max_instances} per request")
    array = _to_array(instances, schema.tensor, "instances")
    return DecodedRequest(array, int(array.shape[0]))


def _check_tensor(tensor: Any, where: str) -> tuple[str, list[int], list[Any]]:
    if not isinstance(tensor, dict):
        raise RequestError(BAD_REQUEST, f"{where} must be an object, got {_json_kind(tensor)}")
    absent = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if absent:
        raise RequestError(BAD_REQUEST, f"{where} is missing {', '.join(absent)}")
    datatype, shape, data = tensor["datatype"], tensor["shape"], tensor["data"]
    if datatype not in V2_DATATYPES:
        raise RequestError(
            BAD_REQUEST, f"{where}.datatype {datatype!r} is not an Open Inference Protocol datatype"
        )
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(
            BAD_REQUEST, f"{where}.shape must be a list of non-negative integers, got {shape!r}"
        )
    if not isinstance(data, list):
        raise RequestError(BAD_REQUEST, f"{where}.data must be a list, got {_json_kind(data)}")
    flat = flatten(data)
    if len(flat) != int(np.prod(shape)):
        raise RequestError(
            BAD_REQUEST, f"{where}.data has {len(flat)} values but shape {shape} needs {int(np.prod(shape))}"
        )
    return datatype, shape, flat


def _one_input(inputs: Any) -> dict[str, Any]:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(BAD_REQUEST, 'request body must have a non-empty "inputs" list')
    if len(inputs) != 1:
        raise RequestError(BAD_REQUEST, f"content type 'np' takes a single input tensor, got {len(inputs)}")
    return inputs[0]


def _positional_frame(inputs: Any, schema: InputSchema, max_instances: int) -> pd.DataFrame:
    tensor = _one_input(inputs)
    where = f"inputs[0] ({tensor.get('name') if isinstance(tensor, dict) else '?'})"
    datatype, shape, flat = _check_tensor(tensor, where)
    width = len(schema.columns)
    if len(shape) != 2 or shape[1] != width:
        names = ", ".join(spec.name for spec in schema.columns)
        raise RequestError(BAD_REQUEST, f"{where}.shape must be [n, {width}] (columns {names}), got {shape}")
    rows = shape[0]
    if rows == 0:
        raise RequestError(BAD_REQUEST, "inputs have no rows; send at least one")
    if rows > max_instances:
        raise RequestError(413, f"{rows} instances exceed the limit of {max_instances} per request")
    columns: list[list[Any]] = [[] for _ in schema.columns]
    for index, value in enumerate(flat):
        row, position = divmod(index, width)
        spec = schema.columns[position]
        if isinstance(value, int | float) and not isinstance(value, bool) and spec.dtype == "string":
            raise RequestError(UNPROCESSABLE, f"{where}.data[{index}] ({spec.name}): expected a string")
        converted = coerce_value(
            value, spec, f"{where}.data[{index}] ({spec.name}, row {row})", schema.optional
        )
        columns[position].append(
            float(converted) if spec.dtype == "double" and converted is not None else converted
        )
    del datatype
    return frame_of(schema.columns, columns)


def _single_tensor(inputs: Any, spec: TensorInput, max_instances: int) -> np.ndarray:
    tensor = _one_input(inputs)
    where = f"inputs[0] ({tensor.get('name') if isinstance(tensor, dict) else '?'})"
    datatype, shape, flat = _check_tensor(tensor, where)
    kind = np.dtype(spec.dtype).kind
    if datatype not in _ACCEPTS.get(kind, frozenset()):
        raise RequestError(
            UNPROCESSABLE, f"{where}.datatype {datatype} does not fit the model's {spec.dtype} tensor"
        )
    if shape[0] > max_instances:
        raise RequestError(413, f"{shape[0]} instances exceed the limit of {max_instances} per request")
    array = _typed_array(flat, spec, where).reshape(shape)
    _check_shape(array, spec, where)
    return array


def _typed_array(values: list[Any], spec: TensorInput, where: str) -> np.ndarray:
    for index, value in enumerate(values):
        if value is None or isinstance(value, str | dict | list):
            raise RequestError(UNPROCESSABLE, f"{where}.data[{index}]: {value!r} is not a number")
        if np.dtype(spec.dtype).kind != "b" and isinstance(value, bool):
            raise RequestError(UNPROCESSABLE, f"{where}.data[{index}]: expected a number, got a boolean")
    try:
        array = np.asarray(values, dtype=spec.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(UNPROCESSABLE, f"{where}: values do not fit {spec.dtype}: {exc}") from None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise RequestError(UNPROCESSABLE, f"{where}: NaN and infinity are not allowed")
    return array


def _check_shape(array: np.ndarray, spec: TensorInput, where: str) -> None:
    expected = spec.shape
    if array.ndim != len(expected) or any(
        want not in (-1, got) for want, got in zip(expected[1:], array.shape[1:], strict=False)
    ):
        raise RequestError(
            BAD_REQUEST,
            f"{where}: shape {list(array.shape)} does not fit the model's tensor {list(expected)}",
        )
    if array.shape[0] == 0:
        raise RequestError(BAD_REQUEST, "inputs have no rows; send at least one")


def _to_array(instances: list[Any], spec: TensorInput, where: str) -> np.ndarray:
    try:
        nested = np.asarray(instances, dtype=object)
    except ValueError:
        raise RequestError(BAD_REQUEST, f"{where}: every instance must have the same shape") from None
    if nested.dtype == object and any(isinstance(x, list) for x in nested.ravel()):
        raise RequestError(BAD_REQUEST, f"{where}: every instance must have the same shape")
    array = _typed_array(nested.ravel().tolist(), spec, where).reshape(nested.shape)
    _check_shape(array, spec, where)
    return array


# -- answers ---------------------------------------------------------------------------------------


def v2_datatype(array: np.ndarray) -> str:
    """The V2 datatype of a NumPy array (text and objects are BYTES)."""
    kind = array.dtype.kind
    if kind in _DATATYPE_OF_KIND:
        return _DATATYPE_OF_KIND[kind]
    return {"i": "INT", "u": "UINT", "f": "FP"}[kind] + str(array.dtype.itemsize * 8)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def output_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """One V2 output: batch dimension first (``[n]`` → ``[n, 1]``), data flat in row-major order."""
    array = np.asarray(array)
    if array.dtype.kind not in "biufOUS":
        array = array.astype(object)
    shape = list(array.shape) if array.ndim > 1 else [int(array.shape[0]) if array.ndim else 1, 1]
    flat = array.reshape(-1)
    if array.dtype.kind in "OUS":
        data = [None if value is None else str(_plain(value)) for value in flat.tolist()]
    else:
        data = flat.tolist()
    return {"name": name, "datatype": v2_datatype(array), "shape": shape, "data": data}


def v2_answer(
    *,
    model: str,
    version: str,
    request_id: str,
    outputs: Sequence[tuple[str, np.ndarray]],
    requested: Sequence[str] | None,
) -> dict[str, Any]:
    """The V2 infer response body for the model's ``outputs`` (only ``requested`` ones if given)."""
    available = [name for name, _ in outputs]
    if requested is not None:
        unknown = [name for name in requested if name not in available]
        if unknown:
            raise RequestError(
                BAD_REQUEST,
                f"unknown output(s) requested: {', '.join(unknown)}; this model gives {', '.join(available)}",
            )
    chosen = [pair for pair in outputs if requested is None or pair[0] in requested]
    return {
        "model_name": model,
        "model_version": version,
        "id": request_id,
        "outputs": [output_tensor(name, array) for name, array in chosen],
    }


def v1_answer(
    *,
    model: str,
    version: str,
    arm: str,
    labels: Sequence[Any] | None,
    probabilities: Sequence[float] | None,
    first_output: np.ndarray,
) -> dict[str, Any]:
    """V1 predict response: ``predictions`` (the labels, else the model's first output) and, when
    the model gives one, ``probabilities`` (P(positive class) per row)."""
    if labels is not None:
        predictions = [_plain(value) for value in labels]
    else:
        predictions = output_tensor("output", first_output)["data"]
    body: dict[str, Any] = {
        "predictions": predictions,
        "model_name": model,
        "model_version": version,
        "arm": arm,
    }
    if probabilities is not None:
        body["probabilities"] = list(probabilities)
    return body


def metadata(
    *, model: str, version: str, arm: str, schema: InputSchema, flavor: str, classes: Sequence[Any] | None
) -> dict[str, Any]:
    """V2 model metadata as MLServer reports it for an MLflow model: inputs from the signature
    (columns: shape ``[-1, 1]``; a tensor: its shape), the request content type, and the arm."""
    if schema.kind == "columns":
        inputs = [
            {
                "name": spec.name,
                "datatype": V2_DATATYPE_OF_DTYPE[spec.dtype],
                "shape": [-1, 1],
                "parameters": {"content_type": "str" if spec.dtype == "string" else "np"},
            }
            for spec in schema.columns
        ]
    else:
        assert schema.tensor is not None
        array = np.zeros(0, dtype=schema.tensor.dtype)
        inputs = [
            {
                "name": schema.tensor.name or "input-0",
                "datatype": v2_datatype(array),
                "shape": list(schema.tensor.shape),
                "parameters": {"content_type": "np"},
            }
        ]
    parameters: dict[str, Any] = {"content_type": schema.content_type, "arm": arm, "flavor": flavor}
    if classes is not None:
        parameters["classes"] = [_plain(value) for value in classes]
    return {
        "name": model,
        "versions": [version],
        "platform": "mlflow",
        "inputs": inputs,
        "parameters": parameters,
    }
