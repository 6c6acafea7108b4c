"""What a model's answer says, and so what can be measured of it (pure: numpy and pydantic only).

A served model answers with named outputs, as MLServer's MLflow runtime names them: one per column
of a DataFrame, one per key of a dict, ``output-1`` for a bare array (see
:mod:`mlcanary.serving.local.v2_outputs`). :func:`read_outputs` finds in them, per row, a class
label and the positive-class probability, by the names in :class:`OutputNames` (configurable per
model as ``model.outputs``):

* a **probability** output holds P(positive) per row (one column, or a class-probability matrix
  of two columns, of which the second is the positive class, as scikit-learn orders ``classes_``);
* a **label** output holds the predicted class; labels are read as 0/1 (integers, booleans, whole
  floats, numeric strings, or any class compared with ``positive_class``);
* without a label output, the label is ``probability >= threshold``; without either, a single
  unnamed output is read by ``single``: ``auto`` takes integers, booleans and whole floats as
  labels, other numbers within [0, 1] as probabilities and anything else as a *score*, which gives
  neither (latency and errors are still measured).

:func:`unmeasured_metrics` turns what each arm's answers held (counted in the inference log) into
the checks that have no data and why, e.g. "v3 (candidate) gives no probability, only labels".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

# Re-exported: OutputNames lives apart so the configuration does not import numpy.
from mlcanary.rollout.output_names import DEFAULT_LABEL_NAMES as DEFAULT_LABEL_NAMES
from mlcanary.rollout.output_names import DEFAULT_PROBABILITY_NAMES as DEFAULT_PROBABILITY_NAMES
from mlcanary.rollout.output_names import OutputNames as OutputNames

LABEL_METRICS_NEEDING_LABELS: tuple[str, ...] = (
    "positive_rate",
    "agreement",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "expected_cost",
)
"""Checks that need a class label from both arms."""
METRICS_NEEDING_PROBABILITY: tuple[str, ...] = ("prediction_drift", "brier", "log_loss")
"""Checks that need a positive-class probability from both arms."""

OutputKind = Literal["label and probability", "label", "probability", "score", "nothing"]


@dataclass(frozen=True)
class OutputReading:
    """Per-row label (0/1) and probability read from one answer, and what the answer held.

    ``labels`` / ``probabilities`` are None when the answer has none; ``classes`` are the raw class
    values as the model gave them (for comparing with the champion's). ``problem`` says why the
    answer is unusable (wrong number of rows, non-finite values, an unreadable probability); the
    other fields are then empty.
    """

    rows: int
    labels: tuple[int | None, ...] | None = None
    probabilities: tuple[float, ...] | None = None
    classes: tuple[Any, ...] = ()
    kind: OutputKind = "nothing"
    problem: str | None = None


def _find(outputs: Sequence[tuple[str, Any]], names: Iterable[str]) -> int | None:
    wanted = [name.lower() for name in names]
    for name in wanted:
        for index, (output, _values) in enumerate(outputs):
            if output.lower() == name:
                return index
    return None


def _as_array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind == "S":
        array = array.astype(object)
    return array


def _rows_of(array: np.ndarray) -> int:
    return int(array.shape[0]) if array.ndim else 1


def _column(array: np.ndarray) -> np.ndarray | None:
    """A 1-D view of a ``[n]`` or ``[n, 1]`` array; None for wider ones."""
    if array.ndim == 1:
        return array
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    return None


def _is_numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "iufb"


def _whole(array: np.ndarray) -> bool:
    if array.dtype.kind in "iub":
        return True
    if array.dtype.kind != "f":
        return False
    finite = array[np.isfinite(array)]
    return bool(np.all(finite == np.round(finite)))


def _probabilities(array: np.ndarray, name: str) -> tuple[np.ndarray | None, str | None]:
    if not _is_numeric(array):
        return None, f"output {name!r} holds {array.dtype} values, not probabilities"
    column = _column(array)
    if column is None:
        if array.ndim == 2 and array.shape[1] == 2:
            column = array[:, 1]
        else:
            return None, (
                f"output {name!r} has shape {list(array.shape)}: a probability output needs one "
                "column, or two (negative, positive class)"
            )
    values = column.astype(float)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        return None, f"output {name!r} holds {bad} non-finite value(s) (NaN or infinity)"
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        return None, f"output {name!r} holds values outside [0, 1]: not probabilities"
    return values, None


def _binary(value: Any, positive: int | str) -> int | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, bool | np.bool_):
        return int(bool(value))
    if isinstance(value, str):
        if value == str(positive):
            return 1
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return _binary(int(stripped), positive)
        return 0 if isinstance(positive, str) else None
    if isinstance(value, int | np.integer):
        if isinstance(positive, str):
            return 1 if str(int(value)) == positive else 0
        return int(value) if -(2**31) <= int(value) < 2**31 else None
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)) or not float(value).is_integer():
            return None
        return _binary(int(value), positive)
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _labels(array: np.ndarray, name: str, positive: int | str) -> tuple[np.ndarray | None, str | None]:
    column = _column(array)
    if column is None:
        return None, f"output {name!r} has shape {list(array.shape)}: a label output needs one column"
    if column.dtype.kind == "f" and not np.all(np.isfinite(column)):
        bad = int(np.count_nonzero(~np.isfinite(column)))
        return None, f"output {name!r} holds {bad} non-finite label(s) (NaN or infinity)"
    return column, None


def _single_kind(array: np.ndarray, single: str) -> str:
    if single != "auto":
        return single
    if array.dtype.kind in "OUSb" or _whole(array):
        return "label"
    if array.ndim == 2 and array.shape[1] == 2:
        return "probability"
    if _is_numeric(array):
        finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
        if finite.size == array.size and (finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)):
            return "probability"
        if finite.size != array.size:
            return "probability"  # read as one, so the non-finite values are reported
    return "score"


def read_outputs(
    outputs: Sequence[tuple[str, Any]], rows: int, names: OutputNames, threshold: float = 0.5
) -> OutputReading:
    """Label and probability per row of one answer (see the module docstring).

    ``outputs`` are (name, values) in the order the model gave them; ``rows`` is how many rows
    were scored. Never raises for what a model returns: an unusable answer has ``problem`` set.
    """
    arrays = [(str(name), _as_array(values)) for name, values in outputs]
    if not arrays:
        return OutputReading(rows, problem="the model returned no output")
    for name, array in arrays:
        if _rows_of(array) != rows:
            return OutputReading(
                rows,
                problem=f"output {name!r} has {_rows_of(array)} row(s) for {rows} input row(s) "
                f"(shape {list(array.shape)})",
            )
    p_index = _find(arrays, names.probability)
    l_index = _find(arrays, names.label)
    if p_index is None and l_index is None:
        others = arrays
    else:
        others = [pair for i, pair in enumerate(arrays) if i not in (p_index, l_index)]
    if l_index is None and others:
        name, array = others[0]
        kind = _single_kind(array, names.single) if p_index is None else "label"
        if p_index is not None and not (array.dtype.kind in "OUSb" or _whole(array)):
            kind = "other"
        if kind == "label":
            l_index = arrays.index((name, array))
        elif kind == "probability" and p_index is None:
            p_index = arrays.index((name, array))
    probabilities = labels = None
    if p_index is not None:
        probabilities, problem = _probabilities(*reversed(arrays[p_index]))
        if problem:
            return OutputReading(rows, problem=problem)
    if l_index is not None:
        labels, problem = _labels(arrays[l_index][1], arrays[l_index][0], names.positive_class)
        if problem:
            return OutputReading(rows, problem=problem)
    classes: tuple[Any, ...] = ()
    binary: tuple[int | None, ...] | None = None
    if labels is not None:
        classes = tuple(sorted({_plain(v) for v in labels.tolist()}, key=repr))
        binary = tuple(_binary(value, names.positive_class) for value in labels.tolist())
    elif probabilities is not None:
        binary = tuple(int(p >= threshold) for p in probabilities)
    kind: OutputKind
    if probabilities is not None:
        kind = "label and probability" if labels is not None else "probability"
    else:
        kind = "label" if labels is not None else "score"
    return OutputReading(
        rows=rows,
        labels=binary,
        probabilities=None if probabilities is None else tuple(float(p) for p in probabilities),
        classes=classes,
        kind=kind,
    )


@dataclass(frozen=True)
class ArmOutputs:
    """What one arm's answers held over a window, as counted in the inference log."""

    arm: str
    version: str | None
    answered: int
    labels: int
    probabilities: int


def unmeasured_metrics(arms: Sequence[ArmOutputs]) -> dict[str, str]:
    """Checks that cannot have data because an arm's model does not give what they need.

    An arm that answered (successfully) without ever giving a label, or a probability, is read as
    a model that does not give one: every check needing it gets the reason. An arm that has not
    answered yet says nothing (that is ordinary "no data yet").
    """
    missing: dict[str, list[str]] = {}
    for arm in arms:
        if arm.answered == 0:
            continue
        who = f"v{arm.version} ({arm.arm})" if arm.version else arm.arm
        if arm.labels == 0 and arm.probabilities == 0:
            gives = f"{who} gives neither a class label nor a probability (a score, or an unread output)"
            for metric in (*LABEL_METRICS_NEEDING_LABELS, *METRICS_NEEDING_PROBABILITY):
                missing.setdefault(metric, []).append(gives)
            continue
        if arm.probabilities == 0:
            for metric in METRICS_NEEDING_PROBABILITY:
                missing.setdefault(metric, []).append(f"{who} gives no probability, only labels")
        if arm.labels == 0:
            for metric in LABEL_METRICS_NEEDING_LABELS:
                missing.setdefault(metric, []).append(f"{who} gives no class label")
    return {metric: "; ".join(reasons) for metric, reasons in missing.items()}


def describe_kinds(kinds: Mapping[str, str]) -> str:
    """``{"v1 (champion)": "label and probability", ...}`` as one line for ``status``."""
    return ", ".join(f"{who}: {kind}" for who, kind in kinds.items())
