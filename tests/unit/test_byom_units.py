"""Bring your own model: the pure parts (answers read, inputs compared, V2 codecs, preflight rules)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from mlcanary.data.model_inputs import InputSchema, TensorInput
from mlcanary.data.schema import FeatureSpec
from mlcanary.demo.traffic.rows import FileRows
from mlcanary.registry.model_loader import SignatureError, input_schema_from_signature, named_outputs
from mlcanary.rollout.checks import evaluate_checks
from mlcanary.rollout.measurements import ArmMetrics, Measurements
from mlcanary.rollout.model_outputs import ArmOutputs, OutputNames, read_outputs, unmeasured_metrics
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.versions import RegistryError, SignatureMissingError
from mlcanary.serving.local.inference_protocol import RequestError
from mlcanary.serving.local.preflight import ArmAnswer, preflight_refusal
from mlcanary.serving.local.v2_binary import binary_outputs, binary_response, inline_binary_inputs
from mlcanary.serving.local.v2_codec import output_tensor, parse_v1, parse_v2

NAMES = OutputNames()
COLUMNS = InputSchema(
    kind="columns",
    columns=(FeatureSpec("amount", "numeric", "double"), FeatureSpec("channel", "categorical", "string")),
)


@pytest.mark.parametrize(
    ("raw", "kind", "labels", "probabilities"),
    [
        (
            pd.DataFrame({"label": [1, 0], "probability": [0.9, 0.2]}),
            "label and probability",
            (1, 0),
            (0.9, 0.2),
        ),
        (np.array([1, 0]), "label", (1, 0), None),
        (np.array([0.7, 0.1]), "probability", (1, 0), (0.7, 0.1)),
        (np.array([[0.3, 0.7], [0.8, 0.2]]), "probability", (1, 0), (0.7, 0.2)),
        (np.array([3.5, -2.0]), "score", None, None),
        ({"predict": np.array(["1", "0"])}, "label", (1, 0), None),
    ],
)
def test_answers_are_read_by_name_or_shape(raw, kind, labels, probabilities) -> None:  # type: ignore[no-untyped-def]
    reading = read_outputs(named_outputs(raw), 2, NAMES)
    assert reading.problem is None
    assert (reading.kind, reading.labels, reading.probabilities) == (kind, labels, probabilities)


def test_sklearn_answer_and_configured_names() -> None:
    outputs = [("output-1", np.array(["fraud", "ok"])), ("predict_proba", np.array([[0.1, 0.9], [0.7, 0.3]]))]
    reading = read_outputs(outputs, 2, OutputNames(positive_class="fraud"))
    assert (reading.labels, reading.probabilities, reading.classes) == ((1, 0), (0.9, 0.3), ("fraud", "ok"))
    custom = OutputNames(label=("decision",), probability=("risk",))
    frame = pd.DataFrame({"risk": [0.2, 0.6], "decision": [0, 1], "other": [5, 6]})
    assert read_outputs(named_outputs(frame), 2, custom).labels == (0, 1)


@pytest.mark.parametrize(
    ("outputs", "rows", "problem"),
    [
        ([("probability", np.array([np.nan, 0.5]))], 2, "non-finite"),
        ([("output-1", np.array([1, 0, 1]))], 2, "3 row(s) for 2 input row(s)"),
        ([("predict_proba", np.array([[0.2, 0.3, 0.5]] * 2))], 2, "shape [2, 3]"),
        ([], 2, "no output"),
    ],
)
def test_unusable_answers_say_why(outputs, rows: int, problem: str) -> None:  # type: ignore[no-untyped-def]
    reading = read_outputs(outputs, rows, NAMES)
    assert reading.problem is not None
    assert problem in reading.problem


def test_what_a_model_gives_decides_what_has_no_data() -> None:
    arms = [ArmOutputs("champion", "1", 50, 50, 50), ArmOutputs("candidate", "3", 40, 40, 0)]
    missing = unmeasured_metrics(arms)
    assert set(missing) == {"prediction_drift", "brier", "log_loss"}
    assert missing["brier"] == "v3 (candidate) gives no probability, only labels"
    assert unmeasured_metrics([ArmOutputs("candidate", "3", 0, 0, 0)]) == {}  # not answered yet: say nothing
    policy = RolloutPolicy.model_validate({"checks": {"brier": {"enabled": True}}})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    m = Measurements(now, now, now, ArmMetrics(version="1"), ArmMetrics(version="3"), unmeasured=missing)
    brier = next(c for c in evaluate_checks(policy, m) if c.name == "brier")
    assert (brier.verdict, brier.blocking) == ("inconclusive", False)
    assert "no data: v3 (candidate) gives no probability" in brier.reason


def test_inputs_compared_with_the_champions() -> None:
    other = InputSchema(kind="columns", columns=(FeatureSpec("amount", "numeric", "long"),))
    found = COLUMNS.differences(other)
    assert found == ["missing column(s) channel", "column amount is long instead of double"]
    assert COLUMNS.differences(COLUMNS) == []
    swapped = InputSchema(kind="columns", columns=tuple(reversed(COLUMNS.columns)))
    assert "another order" in COLUMNS.differences(swapped)[0]
    tensor = InputSchema(kind="tensor", tensor=TensorInput(None, "float64", (-1, 4)))
    assert COLUMNS.differences(tensor) == ["it takes one tensor, the champion takes columns"]


def test_signatures_column_and_tensor_or_none() -> None:
    x = pd.DataFrame({"amount": [1.0], "channel": ["web"]})
    assert input_schema_from_signature(infer_signature(x, np.array([1]))) == COLUMNS
    tensor = input_schema_from_signature(infer_signature(np.zeros((2, 3)), np.array([1, 0])))
    assert (tensor.kind, tensor.tensor.dtype, tensor.tensor.shape) == ("tensor", "float64", (-1, 3))  # type: ignore[union-attr]
    with pytest.raises(SignatureError, match="logged without a signature: log the model with a signature"):
        input_schema_from_signature(None)


def test_binary_request_and_response_round_trip() -> None:
    amount = np.array([[12.5], [3.0]], dtype="<f8").tobytes()
    channel = b"".join(struct.pack("<I", len(v)) + v for v in (b"web", b"pos"))
    header = {
        "inputs": [
            {
                "name": "amount",
                "shape": [2, 1],
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(amount)},
            },
            {
                "name": "channel",
                "shape": [2, 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(channel)},
            },
        ],
        "parameters": {"binary_data_output": True},
    }
    import json

    head = json.dumps(header).encode()
    payload = inline_binary_inputs(head + amount + channel, len(head))
    assert [i["data"] for i in payload["inputs"]] == [[12.5, 3.0], ["web", "pos"]]
    decoded = parse_v2(payload, COLUMNS, max_instances=10)
    assert decoded.data.to_dict("list") == {"amount": [12.5, 3.0], "channel": ["web", "pos"]}
    answer = {
        "outputs": [output_tensor("output-1", np.array([1, 0])), output_tensor("label", np.array(["a", "b"]))]
    }
    body, length = binary_response(answer, binary_outputs(payload, ["output-1", "label"]))
    assert length is not None
    assert json.loads(body[:length])["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert body[length : length + 16] == np.array([1, 0], dtype="<i8").tobytes()
    with pytest.raises(RequestError, match="runs past the end"):
        inline_binary_inputs(head + amount, len(head))


def test_single_tensor_requests_for_columns_and_tensors() -> None:
    numeric = InputSchema(
        kind="columns", columns=(FeatureSpec("a", "numeric", "double"), FeatureSpec("b", "numeric", "long"))
    )
    request = {
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2, 3.0, 4]}],
        "parameters": {"content_type": "np"},
    }
    frame = parse_v2(request, numeric, max_instances=10).data
    assert frame.to_dict("list") == {"a": [1.0, 3.0], "b": [2, 4]}
    tensor = InputSchema(kind="tensor", tensor=TensorInput(None, "float32", (-1, 3)))
    array = parse_v2(
        {"inputs": [{"name": "t", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        tensor,
        max_instances=10,
    ).data
    assert (array.dtype, array.shape) == (np.float32, (1, 3))
    assert parse_v1({"instances": [[1, 2, 3], [4, 5, 6]]}, tensor, max_instances=10).rows == 2
    with pytest.raises(RequestError, match="does not fit the model's tensor"):
        parse_v1({"instances": [[1, 2]]}, tensor, max_instances=10)
    with pytest.raises(RequestError, match="content_type 'str' is not supported"):
        parse_v2({"inputs": [], "parameters": {"content_type": "str"}}, numeric, max_instances=10)


def _answer(*labels: object, probability: bool = True) -> ArmAnswer:
    outputs = [("output-1", np.array(labels))]
    if probability:
        outputs.append(("predict_proba", np.array([[0.4, 0.6]] * len(labels))))
    return ArmAnswer(200, None, read_outputs(outputs, len(labels), NAMES))


def test_preflight_rules() -> None:
    champion = _answer(0, 0, 0)
    assert preflight_refusal(3, _answer(0, 1, 1, probability=False), champion) is None
    refused = preflight_refusal(3, _answer(0, 2, 1), champion)
    assert refused is not None
    assert "class(es) the champion never returns: 2" in refused
    assert "HTTP 500" in (preflight_refusal(3, ArmAnswer(500, "boom", None), champion) or "")


def test_file_rows_with_and_without_target(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    pd.DataFrame({"amount": [1.5, None], "channel": ["web", "pos"], "y": [1, 0]}).to_csv(path, index=False)
    rows = FileRows.read(str(path), "y")
    assert rows.rows == [{"amount": 1.5, "channel": "web"}, {"amount": None, "channel": "pos"}]
    assert rows.labels == [1, 0]
    with pytest.raises(ValueError, match="--target 'label' is not a column"):
        FileRows.read(str(path), "label")
    with pytest.raises(ValueError, match="file not found"):
        FileRows.read(str(tmp_path / "missing.parquet"), None)


def test_drift_reference_of_a_version_not_trained_by_mlcanary(tmp_path: Path) -> None:
    from datetime import timedelta

    from mlcanary.rollout.versions import ModelVersionInfo
    from mlcanary.signals.reference import ReferenceConfig, describe_reference, reference_rows
    from mlcanary.telemetry.store import InferenceLogStore, InferenceRow

    release = datetime(2026, 1, 2, 12, tzinfo=UTC)
    champion = ModelVersionInfo("m", "1", "r", "src", release)
    trained = ModelVersionInfo("m", "1", "r", "src", release, tags={"mlcanary.reference_artifact": "x"})
    config = ReferenceConfig(window=timedelta(hours=1))
    assert describe_reference(config, trained).kind == "training"
    source = describe_reference(config, champion, release)
    assert (source.kind, source.description) == (
        "logged",
        "v1's logged inputs in the 1h before 2026-01-02 12:00:00 UTC (not trained by mlcanary)",
    )
    dataset = tmp_path / "ref.csv"
    pd.DataFrame({"amount": [1.0, 2.0], "is_fraud": [0, 1]}).to_csv(dataset, index=False)
    assert describe_reference(ReferenceConfig(dataset=dataset), trained).kind == "dataset"

    store = InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}")
    rows = [
        InferenceRow(
            f"r{i}",
            0,
            "m",
            release - timedelta(minutes=minutes),
            arm="champion",
            version=version,
            status_code=200,
            features={"amount": float(i)},
            prediction=0,
        )
        for i, (minutes, version) in enumerate([(10, "1"), (20, "1"), (30, "2"), (90, "1"), (-5, "1")])
    ]
    store.write_rows(rows)

    class Registry:
        def get_version(self, name: str, version: str) -> ModelVersionInfo:
            return champion

    frame, text = reference_rows(config, Registry(), store, "m", "1", release)  # type: ignore[arg-type]
    assert sorted(frame["amount"]) == [
        0.0,
        1.0,
    ]  # its version, its arm, inside the window, before the release
    assert text.endswith("2 rows")
    store.close()


class _Signatures:
    """A registry whose versions have the given input schemas (an exception: how reading fails)."""

    def __init__(self, schemas: dict[str, InputSchema | Exception]) -> None:
        self.schemas = schemas

    def input_schema(self, model: str, version: str) -> InputSchema:
        found = self.schemas[version]
        if isinstance(found, Exception):
            raise found
        return found


@pytest.mark.parametrize(
    ("candidate", "champion", "refused"),
    [
        (COLUMNS, COLUMNS, None),
        (
            SignatureMissingError("m v2 was logged without a signature: log it"),
            COLUMNS,
            "v2 was logged without",
        ),
        (COLUMNS, SignatureMissingError("m v1 was logged without a signature"), None),  # nothing to compare
        (RegistryError("artifact store unreachable"), COLUMNS, None),  # not the version's fault
        (InputSchema(kind="columns", columns=COLUMNS.columns[:1]), COLUMNS, "missing column(s) channel"),
        (
            InputSchema(kind="tensor", tensor=TensorInput(None, "float64", (-1, 2))),
            COLUMNS,
            "it takes one tensor, the champion takes columns",
        ),
    ],
)
def test_signature_refusal(
    candidate: InputSchema | Exception, champion: InputSchema | Exception, refused: str | None
) -> None:
    from mlcanary.serving.release_gate import SignatureGate

    gate = SignatureGate(_Signatures({"1": champion, "2": candidate}))  # type: ignore[arg-type]
    found = gate.check("m", "1", "2")
    if refused is None:
        assert found is None
    else:
        assert found is not None
        assert refused in found, found
