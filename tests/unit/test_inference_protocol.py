"""Request parsing and validation for KServe V1 and V2 (pure functions, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlcanary.data.schema import FeatureSpec
from mlcanary.serving.local.inference_protocol import (
    RequestError,
    decode_json,
    encode_json,
    parse_v1_request,
    parse_v2_request,
    v2_metadata_body,
)

FEATURES = (
    FeatureSpec("amount", "numeric", "double"),
    FeatureSpec("hour", "numeric", "long"),
    FeatureSpec("channel", "categorical", "string"),
    FeatureSpec("foreign", "categorical", "boolean"),
)
ROW = {"amount": 12.5, "hour": 3, "channel": "online", "foreign": False}


def v2_inputs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    datatype = {"amount": "FP64", "hour": "INT64", "channel": "BYTES", "foreign": "BOOL"}
    return [
        {"name": name, "shape": [len(rows)], "datatype": datatype[name], "data": [row[name] for row in rows]}
        for name in ROW
    ]


def rejects(call: Any, status: int, *fragments: str) -> RequestError:
    with pytest.raises(RequestError) as info:
        call()
    assert info.value.status == status, info.value.message
    for fragment in fragments:
        assert fragment in info.value.message
    return info.value


# -- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"   ", b"{not json", b'{"instances": [1,', b"\xff\xfe\x00garbage"])
def test_decode_json_rejects_non_json_with_400(body: bytes) -> None:
    rejects(lambda: decode_json(body), 400)


def test_decode_json_rejects_absurd_nesting_with_400() -> None:
    rejects(lambda: decode_json(b"[" * 100_000 + b"]" * 100_000), 400, "nested")


def test_encode_json_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_json({"p": float("nan")})


# -- V1 ------------------------------------------------------------------------------------------


def test_v1_dict_and_list_instances_give_the_same_typed_frame() -> None:
    rows = [ROW, {"amount": 7, "hour": 22.0, "channel": "chip", "foreign": True}]
    from_dicts = parse_v1_request({"instances": rows}, FEATURES)
    from_lists = parse_v1_request({"instances": [list(row.values()) for row in rows]}, FEATURES)

    assert list(from_dicts.columns) == ["amount", "hour", "channel", "foreign"]
    assert [str(t) for t in from_dicts.dtypes] == ["float64", "int64", "object", "bool"]
    assert from_dicts.to_dict("records") == [
        {"amount": 12.5, "hour": 3, "channel": "online", "foreign": False},
        {"amount": 7.0, "hour": 22, "channel": "chip", "foreign": True},
    ]
    assert from_lists.equals(from_dicts)


def test_v1_dict_key_order_does_not_matter() -> None:
    shuffled = dict(reversed(list(ROW.items())))
    frame = parse_v1_request({"instances": [shuffled]}, FEATURES)
    assert list(frame.columns) == [spec.name for spec in FEATURES]
    assert frame.iloc[0]["channel"] == "online"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([ROW], "JSON object"),
        ("instances", "JSON object"),
        ({"inputs": [ROW]}, '"instances"'),
        ({"instances": {"a": 1}}, "must be a list"),
        ({"instances": []}, "empty"),
        ({"instances": [ROW, 5]}, "instances[1]"),
        ({"instances": [[12.5, 3, "online"]]}, "3 values; expected 4"),
        ({"instances": [[12.5, 3, "online", False, 1]]}, "5 values"),
    ],
)
def test_v1_structure_errors_are_400(payload: Any, fragment: str) -> None:
    rejects(lambda: parse_v1_request(payload, FEATURES), 400, fragment)


def test_v1_unknown_features_are_named() -> None:
    instance = {**ROW, "colour": "red", "size": 3}
    rejects(
        lambda: parse_v1_request({"instances": [ROW, instance]}, FEATURES),
        400,
        "instances[1]",
        "colour",
        "size",
    )


def test_v1_missing_features_are_named() -> None:
    instance = {"amount": 1.0, "channel": "chip"}
    error = rejects(lambda: parse_v1_request({"instances": [instance]}, FEATURES), 400, "missing", "hour")
    assert "foreign" in error.message
    assert "amount" not in error.message


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("amount", "12.5", "expected a number"),
        ("amount", True, "boolean"),
        ("amount", None, "null"),
        ("amount", float("nan"), "NaN"),
        ("amount", float("inf"), "Infinity"),
        ("amount", 10**400, "out of range"),
        ("amount", [1.0], "a list"),
        ("hour", 3.5, "non-integral"),
        ("hour", False, "boolean"),
        ("hour", 2**63, "out of range"),
        ("channel", 3, "expected a string"),
        ("channel", None, "null"),
        ("foreign", 1, "true or false"),
        ("foreign", "false", "true or false"),
    ],
)
def test_v1_wrong_values_are_422_and_name_the_field(name: str, value: Any, fragment: str) -> None:
    instance = {**ROW, name: value}
    rejects(
        lambda: parse_v1_request({"instances": [ROW, instance]}, FEATURES),
        422,
        f"instances[1].{name}",
        fragment,
    )


def test_v1_nan_literal_from_the_wire_is_rejected() -> None:
    payload = decode_json(b'{"instances": [[NaN, 3, "online", false]]}')
    rejects(lambda: parse_v1_request(payload, FEATURES), 422, "instances[0][0] (amount)", "NaN")


def test_v1_too_many_instances_is_413() -> None:
    rejects(lambda: parse_v1_request({"instances": [ROW] * 6}, FEATURES, max_instances=5), 413, "6", "5")
    assert len(parse_v1_request({"instances": [ROW] * 5}, FEATURES, max_instances=5)) == 5


# -- V2 ------------------------------------------------------------------------------------------


def test_v2_round_trip_matches_v1() -> None:
    rows = [ROW, {"amount": 99.0, "hour": 23, "channel": "swipe", "foreign": True}]
    parsed = parse_v2_request({"id": "abc", "inputs": v2_inputs(rows)}, FEATURES)
    assert parsed.id == "abc"
    assert parsed.frame.equals(parse_v1_request({"instances": rows}, FEATURES))


def test_v2_accepts_column_shape_nested_data_and_input_order() -> None:
    inputs = list(reversed(v2_inputs([ROW, ROW])))
    inputs[0] = {**inputs[0], "shape": [2, 1], "data": [[v] for v in inputs[0]["data"]]}
    parsed = parse_v2_request({"inputs": inputs, "parameters": {"content_type": "pd"}}, FEATURES)
    assert parsed.id is None
    assert list(parsed.frame.columns) == [spec.name for spec in FEATURES]
    assert len(parsed.frame) == 2


def test_v2_integer_datatype_for_a_double_feature_is_accepted() -> None:
    inputs = v2_inputs([ROW])
    inputs[0] = {**inputs[0], "datatype": "INT32", "data": [12]}
    frame = parse_v2_request({"inputs": inputs}, FEATURES).frame
    assert frame["amount"].dtype == "float64"
    assert frame["amount"].iloc[0] == 12.0


def _with(index: int, **changes: Any) -> dict[str, Any]:
    inputs = v2_inputs([ROW, ROW])
    inputs[index] = {**inputs[index], **changes}
    return {"inputs": inputs}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"instances": [ROW]}, '"inputs"'),
        ({"inputs": "x"}, "must be a list"),
        ({"inputs": []}, "empty"),
        ({"id": 5, "inputs": v2_inputs([ROW])}, '"id"'),
        ({"inputs": [5]}, "inputs[0]"),
        ({"inputs": [{"name": "amount", "data": [1.0]}]}, "missing shape, datatype"),
        (_with(1, shape=[3]), "shape [3] needs 3"),
        (_with(1, shape=[2, 2]), "[n] or [n, 1]"),
        (_with(1, shape=[-2]), "non-negative integers"),
        (_with(1, shape="2"), "non-negative integers"),
        (_with(2, data="online"), "data must be a list"),
        (_with(2, datatype="STRING"), "not an Open Inference Protocol datatype"),
        (_with(1, shape=[1], data=[3]), "different numbers of rows"),
        ({"inputs": [*v2_inputs([ROW]), v2_inputs([ROW])[0]]}, "duplicates inputs[0]"),
        ({"inputs": [*v2_inputs([ROW]), {**v2_inputs([ROW])[0], "name": "colour"}]}, "colour"),
        ({"inputs": v2_inputs([ROW])[1:]}, "amount"),
        ({"inputs": [{**i, "shape": [0], "data": []} for i in v2_inputs([ROW])]}, "no rows"),
    ],
)
def test_v2_structure_errors_are_400(payload: Any, fragment: str) -> None:
    rejects(lambda: parse_v2_request(payload, FEATURES), 400, fragment)


@pytest.mark.parametrize(
    ("payload", "fragments"),
    [
        (_with(0, data=[1.0, "x"]), ("inputs[0] (amount).data[1]", "expected a number")),
        (_with(0, data=[1.0, None]), ("data[1]", "null")),
        (_with(1, data=[1, 2.5]), ("inputs[1] (hour).data[1]", "non-integral")),
        (_with(0, datatype="INT64", data=[1, 2.5]), ("inputs[0] (amount).data[1]", "non-integral")),
        (_with(1, datatype="FP64"), ("FP64 does not fit", "long", "INT64")),
        (_with(2, datatype="FP64"), ("does not fit", "string", "BYTES")),
        (_with(3, data=[True, 0]), ("inputs[3] (foreign).data[1]", "true or false")),
    ],
)
def test_v2_wrong_values_are_422(payload: Any, fragments: tuple[str, ...]) -> None:
    rejects(lambda: parse_v2_request(payload, FEATURES), 422, *fragments)


def test_v2_nan_literal_is_rejected_by_name() -> None:
    body = json.dumps({"inputs": v2_inputs([ROW])}).replace("12.5", "Infinity").encode()
    rejects(
        lambda: parse_v2_request(decode_json(body), FEATURES), 422, "inputs[0] (amount).data[0]", "Infinity"
    )


def test_v2_too_many_rows_is_413_before_reading_data() -> None:
    payload = _with(0, shape=[50_000], data=[])
    rejects(lambda: parse_v2_request(payload, FEATURES, max_instances=100), 413, "50000")


def test_v2_metadata_lists_each_feature_with_its_datatype() -> None:
    body = v2_metadata_body(model="fraud", version="3", arm="candidate", features=FEATURES)
    assert body["name"] == "fraud"
    assert body["versions"] == ["3"]
    assert [(i["name"], i["datatype"]) for i in body["inputs"]] == [
        ("amount", "FP64"),
        ("hour", "INT64"),
        ("channel", "BYTES"),
        ("foreign", "BOOL"),
    ]
    assert [o["name"] for o in body["outputs"]] == ["predict", "predict_proba"]
