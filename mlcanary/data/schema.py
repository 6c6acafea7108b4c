"""Feature schema shared by training, the registry and the model servers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pandas.api import types as ptypes

FeatureKind = Literal["numeric", "categorical"]
FeatureDtype = Literal["double", "long", "boolean", "string"]


@dataclass(frozen=True)
class FeatureSpec:
    """One input column of a model.

    ``kind`` decides preprocessing (numeric: impute + scale; categorical: one-hot). ``dtype`` is
    what a request must send: ``double`` and ``long`` accept JSON numbers (``long`` only integral
    ones), ``boolean`` accepts true/false, ``string`` accepts strings. Names match MLflow's
    column types so the spec round-trips through a model signature.
    """

    name: str
    kind: FeatureKind
    dtype: FeatureDtype


def infer_schema(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[FeatureSpec, ...]:
    """Feature specs for ``columns`` of ``frame`` from their pandas dtypes."""
    specs = []
    for name in columns:
        series = frame[name]
        if ptypes.is_bool_dtype(series):
            specs.append(FeatureSpec(name, "categorical", "boolean"))
        elif ptypes.is_integer_dtype(series):
            specs.append(FeatureSpec(name, "numeric", "long"))
        elif ptypes.is_numeric_dtype(series):
            specs.append(FeatureSpec(name, "numeric", "double"))
        else:
            specs.append(FeatureSpec(name, "categorical", "string"))
    return tuple(specs)
