"""Load training data: the user's CSV / Parquet file or the bundled generator.

Every problem with the data raises :class:`DataError` whose message names the file and the column
and says what is wrong, so the CLI and the flows can show it as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mlcanary.config import DataSettings
from mlcanary.data.schema import FeatureSpec, infer_schema
from mlcanary.data.synthetic import DriftKnobs, generate_transactions

SUPPORTED_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# An object column where at least this share parses as numbers is numeric data with a few bad cells.
_MOSTLY_NUMERIC = 0.9


class DataError(Exception):
    """Training data that cannot be used; the message is the whole explanation."""


@dataclass(frozen=True)
class Dataset:
    """A validated table: feature columns plus a binary 0/1 target column.

    ``fingerprint`` identifies the exact contents (columns, dtypes and values), so the same data
    always gives the same fingerprint and any change gives another one.
    """

    frame: pd.DataFrame
    target: str
    features: tuple[FeatureSpec, ...]
    source: str
    fingerprint: str

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def x(self) -> pd.DataFrame:
        return self.frame[self.feature_names]

    @property
    def y(self) -> pd.Series:
        return self.frame[self.target]


def fingerprint(frame: pd.DataFrame) -> str:
    """A short, stable content hash of a DataFrame (order of rows and columns matters)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, with clear errors for a missing, unreadable or empty file."""
    kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as {kind}: {exc}") from None
    return frame


def _check_target(frame: pd.DataFrame, target: str, source: str) -> pd.Series:
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:12])) + (" ..." if len(frame.columns) > 12 else "")
        raise DataError(f"{source}: target column {target!r} not found; columns are: {shown}")
    labels = frame[target]
    if labels.isna().any():
        rows = labels.index[labels.isna()][:5].tolist()
        raise DataError(f"{source}: target column {target!r} has missing values (rows {rows})")
    if ptypes.is_bool_dtype(labels):
        return labels.astype(int)
    if not ptypes.is_numeric_dtype(labels):
        # Text or categorical labels such as "0"/"1" are fine as long as every one is a number.
        parsed = pd.to_numeric(labels.astype("object"), errors="coerce")
        bad = labels[parsed.isna()]
        if len(bad):
            raise DataError(
                f"{source}: target column {target!r} must be numeric 0/1, "
                f"found non-numeric value {bad.iloc[0]!r} (row {bad.index[0]})"
            )
        labels = parsed
    values = set(np.unique(labels.to_numpy()).tolist())
    if not values <= {0, 1}:
        raise DataError(
            f"{source}: target column {target!r} must hold only 0 and 1, found {sorted(values)[:6]}"
        )
    return labels.astype(int)


def _clean_features(frame: pd.DataFrame, columns: Sequence[str], source: str) -> pd.DataFrame:
    """The feature columns, with numbers stored as objects (booleans with blanks, decimals) made
    numeric; raises :class:`DataError` for an empty column or one mixing text into numbers."""
    table = frame[list(columns)].copy()
    for name in columns:
        series = table[name]
        if series.isna().all():
            raise DataError(f"{source}: feature column {name!r} has no values")
        if not (ptypes.is_object_dtype(series) or ptypes.is_string_dtype(series)):
            continue
        present = series.dropna()
        is_text = present.map(lambda v: isinstance(v, str))
        if not is_text.any():
            table[name] = pd.to_numeric(series.map(lambda v: np.nan if pd.isna(v) else float(v)))
            continue
        parsed = pd.to_numeric(present, errors="coerce")
        bad = present[parsed.isna()]
        if len(bad) > 0 and 1 - len(bad) / len(present) >= _MOSTLY_NUMERIC:
            raise DataError(
                f"{source}: feature column {name!r} is numeric but row {bad.index[0]} holds "
                f"non-numeric value {bad.iloc[0]!r}"
            )
        if not is_text.all():
            other = present[~is_text].iloc[0]
            raise DataError(
                f"{source}: feature column {name!r} mixes text with other values "
                f"(e.g. {other!r} in row {present[~is_text].index[0]})"
            )
    return table


def prepare(
    frame: pd.DataFrame, target: str, *, features: Sequence[str] | None = None, source: str
) -> Dataset:
    """Validate ``frame`` and wrap it as a :class:`Dataset`.

    Raises :class:`DataError` for an empty table, a missing target or feature column, a target that
    is not 0/1, or a column that looks numeric but holds text.
    """
    if frame.empty or len(frame.columns) == 0:
        raise DataError(f"{source}: the table has no rows")
    labels = _check_target(frame, target, source)
    if features is None:
        columns = [str(c) for c in frame.columns if c != target]
    else:
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: feature column(s) not found: {', '.join(missing)}")
        if target in features:
            raise DataError(f"{source}: the target {target!r} cannot also be a feature")
        columns = list(features)
    if not columns:
        raise DataError(f"{source}: no feature columns besides the target {target!r}")
    table = _clean_features(frame, columns, source)
    table[target] = labels
    return Dataset(
        frame=table.reset_index(drop=True),
        target=target,
        features=infer_schema(table, columns),
        source=source,
        fingerprint=fingerprint(table),
    )


def load_dataset(settings: DataSettings) -> Dataset:
    """Load the configured data source as a validated :class:`Dataset`."""
    if settings.source == "synthetic":
        s = settings.synthetic
        frame = generate_transactions(
            s.rows,
            seed=s.seed,
            knobs=DriftKnobs(covariate_shift=s.covariate_shift, fraud_rate=s.fraud_rate, noise=s.noise),
        )
        source = (
            f"synthetic(rows={s.rows}, seed={s.seed}, covariate_shift={s.covariate_shift}, "
            f"fraud_rate={s.fraud_rate}, noise={s.noise})"
        )
        return prepare(frame, settings.target, features=settings.features, source=source)
    assert settings.path is not None  # guaranteed by DataSettings validation
    frame = read_table(settings.path)
    return prepare(frame, settings.target, features=settings.features, source=str(settings.path))
