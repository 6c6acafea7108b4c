"""The Prefect ``train`` flow on Prefect's test harness and a real MLflow SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.train import train
from mlcanary.registry.mlflow_registry import registry_from_settings

pytestmark = pytest.mark.flows

CONFIG = """
state_dir: {state}
model:
  name: {name}
  estimator: logistic_regression
data:
  synthetic:
    rows: 2000
training:
  reference_rows: 300
"""


@pytest.fixture
def config_file(tmp_path: Path, mlflow_state: Path, make_settings) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(CONFIG.format(state=mlflow_state, name=make_settings().model.name))
    return path


def test_train_flow_sets_champion_then_candidate(config_file: Path, make_settings) -> None:
    first = train(config_file=str(config_file))
    assert first["alias"] == "champion"
    assert first["gate"]["outcome"] == "first_version"

    second = train(config_file=str(config_file))
    assert second["alias"] == "candidate"
    assert second["champion_version"] == first["version"]
    assert "passed the offline gate" in second["reason"]

    registry = registry_from_settings(make_settings())
    name = make_settings().model.name
    assert registry.aliases(name) == {"champion": first["version"], "candidate": second["version"]}


def test_train_flow_fails_clearly_on_missing_data(config_file: Path, tmp_path: Path) -> None:
    from prefect import get_client  # noqa: F401  (the harness must be up for the state below)

    state = train(config_file=str(config_file), data_path=str(tmp_path / "missing.csv"), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="file not found"):
        state.result()
