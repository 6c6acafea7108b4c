"""Loading the user's CSV / Parquet data (and the generator) into a validated Dataset."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcanary.config import DataSettings, SyntheticDataSettings
from mlcanary.data.loader import DataError, Dataset, fingerprint, load_dataset, prepare, read_table
from mlcanary.data.schema import FeatureSpec
from mlcanary.data.synthetic import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, TARGET


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "amount": rng.uniform(1, 100, n).round(2),
            "count": rng.integers(0, 10, n),
            "channel": rng.choice(["chip", "online"], n),
            "label": np.tile([0, 1], n // 2),
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _load(path: Path, target: str = "label", features: list[str] | None = None) -> Dataset:
    return load_dataset(DataSettings(source="file", path=path, target=target, features=features))


def _data_error(path: Path, target: str = "label", features: list[str] | None = None) -> str:
    with pytest.raises(DataError) as excinfo:
        _load(path, target, features)
    return str(excinfo.value)


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".CSV"])
def test_round_trip_infers_features_and_target(tmp_path: Path, suffix: str) -> None:
    original = _frame()
    path = _write(original, tmp_path / f"data{suffix.lower()}").rename(tmp_path / f"data{suffix}")
    dataset = _load(path)
    assert dataset.target == "label"
    assert dataset.feature_names == ["amount", "count", "channel"]
    assert dataset.features == (
        FeatureSpec("amount", "numeric", "double"),
        FeatureSpec("count", "numeric", "long"),
        FeatureSpec("channel", "categorical", "string"),
    )
    assert pd.api.types.is_integer_dtype(dataset.y)
    np.testing.assert_array_equal(dataset.y.to_numpy(), original["label"].to_numpy())
    pd.testing.assert_frame_equal(
        dataset.x.reset_index(drop=True), original[["amount", "count", "channel"]], check_dtype=False
    )
    assert dataset.source == str(path)
    assert len(dataset.fingerprint) == 16


def test_csv_and_parquet_of_the_same_table_load_the_same(tmp_path: Path) -> None:
    frame = _frame()
    from_csv = _load(_write(frame, tmp_path / "d.csv"))
    from_parquet = _load(_write(frame, tmp_path / "d.parquet"))
    assert from_csv.features == from_parquet.features
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bool_target_becomes_int(tmp_path: Path, suffix: str) -> None:
    frame = _frame().assign(label=lambda f: f["label"].astype(bool))
    dataset = _load(_write(frame, tmp_path / f"d{suffix}"))
    assert pd.api.types.is_integer_dtype(dataset.y)
    assert set(dataset.y.unique()) == {0, 1}
    np.testing.assert_array_equal(dataset.y.to_numpy(), frame["label"].astype(int).to_numpy())


def test_float_zero_one_target_becomes_int(tmp_path: Path) -> None:
    frame = _frame().assign(label=lambda f: f["label"].astype(float))
    dataset = _load(_write(frame, tmp_path / "d.parquet"))
    assert pd.api.types.is_integer_dtype(dataset.y)


def test_bool_feature_is_categorical_boolean(tmp_path: Path) -> None:
    frame = _frame().assign(flag=lambda f: f["count"] > 4)
    dataset = _load(_write(frame, tmp_path / "d.parquet"))
    assert FeatureSpec("flag", "categorical", "boolean") in dataset.features


@pytest.mark.parametrize("features", [["amount"], ["channel", "amount"], ["count"]])
def test_feature_subset_is_honoured_in_order(tmp_path: Path, features: list[str]) -> None:
    dataset = _load(_write(_frame(), tmp_path / "d.csv"), features=features)
    assert dataset.feature_names == features
    assert list(dataset.frame.columns) == [*features, "label"]
    assert list(dataset.x.columns) == features


def test_missing_values_in_a_feature_are_kept(tmp_path: Path) -> None:
    frame = _frame().astype({"amount": float})
    frame.loc[3, "amount"] = np.nan
    dataset = _load(_write(frame, tmp_path / "d.csv"))
    assert dataset.x["amount"].isna().sum() == 1


# -- DataError cases -------------------------------------------------------------------------------


def _missing(tmp: Path) -> Path:
    return tmp / "absent.csv"


def _directory(tmp: Path) -> Path:
    path = tmp / "folder.csv"
    path.mkdir()
    return path


def _xlsx(tmp: Path) -> Path:
    path = tmp / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.csv"
    path.write_bytes(b"")
    return path


def _header_only(tmp: Path) -> Path:
    path = tmp / "header.csv"
    path.write_text("amount,channel,label\n")
    return path


def _corrupt_parquet(tmp: Path) -> Path:
    path = tmp / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    return path


def _truncated_parquet(tmp: Path) -> Path:
    path = _write(_frame(), tmp / "truncated.parquet")
    path.write_bytes(path.read_bytes()[:-40])
    return path


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (_missing, ["absent.csv", "not found"]),
        (_directory, ["folder.csv", "not a file"]),
        (_xlsx, ["data.xlsx", "unsupported file type", ".xlsx", ".csv", ".parquet"]),
        (_empty, ["empty.csv", "empty"]),
        (_header_only, ["header.csv", "no rows"]),
        (_corrupt_parquet, ["broken.parquet", "cannot read as parquet"]),
        (_truncated_parquet, ["truncated.parquet", "cannot read as parquet"]),
    ],
    ids=["missing", "directory", "xlsx", "empty", "header-only", "corrupt-parquet", "truncated-parquet"],
)
def test_unusable_file(tmp_path: Path, make: Callable[[Path], Path], fragments: list[str]) -> None:
    message = _data_error(make(tmp_path))
    assert str(tmp_path) in message
    for fragment in fragments:
        assert fragment in message


def _with(**columns: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(**columns)

    return change


def _stray_text(frame: pd.DataFrame) -> pd.DataFrame:
    # A numeric column exported as text with one bad cell (a string column in Parquet).
    frame = frame.astype({"amount": str})
    frame.loc[17, "amount"] = "n/a?"
    return frame


def _nan_target(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"label": float})
    frame.loc[[2, 5], "label"] = np.nan
    return frame


@pytest.mark.parametrize(
    ("change", "target", "features", "fragments"),
    [
        (lambda f: f, "is_fraud", None, ["'is_fraud' not found", "amount", "count", "channel", "label"]),
        (_nan_target, "label", None, ["'label'", "missing values", "[2, 5]"]),
        (_with(label=["yes", "no"] * 20), "label", None, ["'label'", "non-numeric", "'yes'"]),
        (_with(label=[0, 1, 2, 1] * 10), "label", None, ["'label'", "only 0 and 1", "2"]),
        (_with(label=[0.0, 1.0, 0.5, 1.0] * 10), "label", None, ["'label'", "only 0 and 1", "0.5"]),
        (_with(label=[-1, 1] * 20), "label", None, ["'label'", "only 0 and 1", "-1"]),
        (lambda f: f, "label", ["amount", "velocity"], ["velocity", "not found"]),
        (lambda f: f, "label", ["amount", "label"], ["'label'", "cannot also be a feature"]),
        (_with(empty=np.nan), "label", None, ["'empty'", "no values"]),
        (_stray_text, "label", None, ["'amount'", "row 17", "'n/a?'", "non-numeric"]),
        (lambda f: f[["label"]], "label", None, ["no feature columns"]),
    ],
    ids=[
        "missing-target",
        "nan-target",
        "text-target",
        "target-2",
        "target-half",
        "target-minus-1",
        "missing-feature",
        "target-as-feature",
        "all-nan-feature",
        "stray-text",
        "only-target",
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_invalid_table(
    tmp_path: Path,
    suffix: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    target: str,
    features: list[str] | None,
    fragments: list[str],
) -> None:
    frame = change(_frame())
    path = _write(frame, tmp_path / f"data{suffix}")
    message = _data_error(path, target, features)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_mostly_text_column_is_categorical_not_an_error(tmp_path: Path) -> None:
    frame = _frame().assign(code=["A1", "B2", "17", "C3"] * 10)
    dataset = _load(_write(frame, tmp_path / "d.csv"))
    assert FeatureSpec("code", "categorical", "string") in dataset.features


def test_in_memory_column_mixing_text_and_numbers() -> None:
    frame = _frame().assign(mixed=["a", 1, "b", 2.5] * 10)
    with pytest.raises(DataError, match="'mixed' mixes text with other values"):
        prepare(frame, "label", source="memory")


def test_prepare_names_the_source_and_empty_frame() -> None:
    with pytest.raises(DataError, match=r"^my-source: the table has no rows$"):
        prepare(pd.DataFrame(), "label", source="my-source")


def _prepare_or_message(load: Callable[[], Dataset]) -> tuple[Dataset | None, str]:
    """The dataset, or None and the DataError's message."""
    try:
        return load(), ""
    except DataError as exc:
        return None, str(exc)


@pytest.mark.parametrize(
    "labels",
    [["0", "1"] * 20, pd.Categorical([0, 1] * 20)],
    ids=["string-0-1", "categorical-0-1"],
)
def test_target_of_numeric_strings_is_accepted_as_ints(labels: object) -> None:
    frame = _frame().assign(label=labels)
    dataset, message = _prepare_or_message(lambda: prepare(frame, "label", source="memory"))
    assert dataset is not None, message
    assert set(dataset.y.unique()) == {0, 1}
    assert dataset.y.dtype.kind == "i"


def _bool_with_blank(tmp: Path) -> Path:
    path = tmp / "flags.csv"
    path.write_text("flag,amount,label\nTrue,1.0,0\nFalse,2.0,1\n,3.0,0\nTrue,4.0,1\n")
    return path


def _decimal_parquet(tmp: Path) -> Path:
    frame = pd.DataFrame(
        {"price": [decimal.Decimal("1.50"), decimal.Decimal("2.25")] * 5, "label": [0, 1] * 5}
    )
    return _write(frame, tmp / "decimal.parquet")


@pytest.mark.parametrize("make", [_bool_with_blank, _decimal_parquet], ids=["bool-with-blank", "decimal"])
def test_numbers_stored_as_objects_become_numeric(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    dataset, message = _prepare_or_message(lambda: _load(path))
    assert dataset is not None, message
    kinds = {f.name: f.kind for f in dataset.features}
    assert set(kinds.values()) == {"numeric"}


# -- fingerprint -----------------------------------------------------------------------------------


def test_fingerprint_identical_frames_match() -> None:
    assert fingerprint(_frame()) == fingerprint(_frame())
    assert fingerprint(_frame()) == fingerprint(_frame().copy(deep=True))


def test_fingerprint_ignores_the_index() -> None:
    frame = _frame()
    assert fingerprint(frame) == fingerprint(frame.set_axis(range(100, 100 + len(frame))))


def _change_cell(frame: pd.DataFrame) -> pd.DataFrame:
    changed = frame.copy()
    changed.loc[7, "amount"] += 0.01
    return changed


def _change_text(frame: pd.DataFrame) -> pd.DataFrame:
    changed = frame.copy()
    changed.loc[0, "channel"] = "swipe"
    return changed


@pytest.mark.parametrize(
    "change",
    [
        _change_cell,
        _change_text,
        lambda f: f[list(reversed(f.columns))],
        lambda f: f.iloc[::-1].reset_index(drop=True),
        lambda f: f.rename(columns={"amount": "value"}),
        lambda f: f.astype({"count": "int32"}),
        lambda f: f.iloc[:-1],
    ],
    ids=["numeric-cell", "text-cell", "column-order", "row-order", "column-name", "dtype", "row-dropped"],
)
def test_fingerprint_changes_with_content(change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    frame = _frame()
    assert fingerprint(change(frame)) != fingerprint(frame)


def test_dataset_fingerprint_tracks_the_file(tmp_path: Path) -> None:
    first = _load(_write(_frame(), tmp_path / "a.csv"))
    same = _load(_write(_frame(), tmp_path / "b.csv"))
    changed = _load(_write(_change_cell(_frame()), tmp_path / "c.csv"))
    assert first.fingerprint == same.fingerprint
    assert first.fingerprint != changed.fingerprint


# -- load_dataset ----------------------------------------------------------------------------------


def test_load_dataset_synthetic() -> None:
    settings = DataSettings(synthetic=SyntheticDataSettings(rows=500, seed=3))
    dataset = load_dataset(settings)
    assert len(dataset.frame) == 500
    assert dataset.target == TARGET
    assert dataset.feature_names == list(FEATURES)
    kinds = {spec.name: spec.kind for spec in dataset.features}
    assert {name for name, kind in kinds.items() if kind == "categorical"} == set(CATEGORICAL_FEATURES)
    assert {name for name, kind in kinds.items() if kind == "numeric"} == set(NUMERIC_FEATURES)
    assert "rows=500" in dataset.source
    assert "seed=3" in dataset.source
    assert load_dataset(settings).fingerprint == dataset.fingerprint
    other_seed = DataSettings(synthetic=SyntheticDataSettings(rows=500, seed=4))
    assert load_dataset(other_seed).fingerprint != dataset.fingerprint


def test_load_dataset_synthetic_passes_the_knobs() -> None:
    plain = load_dataset(DataSettings(synthetic=SyntheticDataSettings(rows=5_000, seed=1)))
    shifted = load_dataset(
        DataSettings(synthetic=SyntheticDataSettings(rows=5_000, seed=1, covariate_shift=1.5))
    )
    rare = load_dataset(DataSettings(synthetic=SyntheticDataSettings(rows=5_000, seed=1, fraud_rate=0.3)))
    assert shifted.x["amount"].median() > plain.x["amount"].median()
    assert rare.y.mean() > plain.y.mean() + 0.1


def test_load_dataset_synthetic_feature_subset() -> None:
    settings = DataSettings(features=["amount", "channel"], synthetic=SyntheticDataSettings(rows=300, seed=0))
    assert load_dataset(settings).feature_names == ["amount", "channel"]


def test_load_dataset_file(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "d.parquet")
    settings = DataSettings(source="file", path=path, target="label", features=["channel"])
    dataset = load_dataset(settings)
    assert dataset.source == str(path)
    assert dataset.feature_names == ["channel"]
    assert len(dataset.frame) == len(_frame())


def test_read_table_returns_the_raw_frame(tmp_path: Path) -> None:
    frame = _frame()
    pd.testing.assert_frame_equal(read_table(_write(frame, tmp_path / "d.parquet")), frame)
