"""What a model takes as input, from its MLflow signature: columns or one tensor.

A **column-based** model (an MLflow ``ColSpec`` schema, e.g. a scikit-learn pipeline over a
DataFrame) takes one typed column per feature (:class:`~mlcanary.data.schema.FeatureSpec`). A
**tensor-based** model (a ``TensorSpec`` schema) takes one array of a numeric dtype and a shape
whose first dimension is the batch (``-1``). The model servers decode requests into that form,
release compares the candidate's inputs with the champion's, and preflight builds rows from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlcanary.data.schema import FeatureSpec

InputKind = Literal["columns", "tensor"]

TENSOR_DTYPES: frozenset[str] = frozenset(
    {"float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"}
)
"""NumPy dtypes a tensor input may have (what V2 sends as FP*, INT*, UINT8 and BOOL)."""


@dataclass(frozen=True)
class TensorInput:
    """One tensor input: its name in the signature (None when unnamed), dtype and shape (``-1`` =
    any size; the first dimension is the batch)."""

    name: str | None
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        dims = ", ".join(
            "n" if i == 0 and d == -1 else ("*" if d == -1 else str(d)) for i, d in enumerate(self.shape)
        )
        return f"{self.name or 'tensor'}: {self.dtype} [{dims}]"


@dataclass(frozen=True)
class InputSchema:
    """A model's inputs: ``columns`` (column-based) or ``tensor`` (tensor-based).

    ``optional`` names columns the signature marks as not required (they may be null).
    """

    kind: InputKind
    columns: tuple[FeatureSpec, ...] = ()
    tensor: TensorInput | None = None
    optional: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.kind == "columns" and not self.columns:
            raise ValueError("a column-based input schema needs at least one column")
        if self.kind == "tensor" and self.tensor is None:
            raise ValueError("a tensor-based input schema needs its tensor")

    @property
    def content_type(self) -> str:
        """MLServer's request content type for this model: ``pd`` (columns) or ``np`` (a tensor)."""
        return "pd" if self.kind == "columns" else "np"

    def describe(self) -> str:
        """One line naming every input, e.g. ``amount: double, country: string``."""
        if self.kind == "tensor":
            assert self.tensor is not None
            return self.tensor.describe()
        return ", ".join(f"{spec.name}: {spec.dtype}" for spec in self.columns)

    def differences(self, other: InputSchema) -> list[str]:
        """How ``other`` differs from this schema (empty when a request for one fits the other).

        Columns are compared by name, dtype and position (V1 list instances and single tensors
        are positional); tensors by dtype and shape.
        """
        if self.kind != other.kind:
            return [f"it takes {_kind_text(other)}, the champion takes {_kind_text(self)}"]
        if self.kind == "tensor":
            assert self.tensor is not None
            assert other.tensor is not None
            mine, theirs = self.tensor, other.tensor
            found = []
            if mine.dtype != theirs.dtype:
                found.append(f"tensor dtype {theirs.dtype} instead of {mine.dtype}")
            if mine.shape[1:] != theirs.shape[1:]:
                found.append(f"tensor shape {list(theirs.shape)} instead of {list(mine.shape)}")
            return found
        mine_by_name = {spec.name: spec for spec in self.columns}
        theirs_by_name = {spec.name: spec for spec in other.columns}
        found = []
        missing = [name for name in mine_by_name if name not in theirs_by_name]
        extra = [name for name in theirs_by_name if name not in mine_by_name]
        if missing:
            found.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            found.append(f"extra column(s) {', '.join(extra)}")
        for name, spec in mine_by_name.items():
            theirs_spec = theirs_by_name.get(name)
            if theirs_spec is not None and theirs_spec.dtype != spec.dtype:
                found.append(f"column {name} is {theirs_spec.dtype} instead of {spec.dtype}")
        if not found and [s.name for s in self.columns] != [s.name for s in other.columns]:
            found.append(
                "the columns are in another order ("
                + ", ".join(s.name for s in other.columns)
                + " instead of "
                + ", ".join(s.name for s in self.columns)
                + ")"
            )
        return found


def _kind_text(schema: InputSchema) -> str:
    return "one tensor" if schema.kind == "tensor" else "columns"
