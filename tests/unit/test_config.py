"""Configuration: embedded defaults, profiles and ``extends``, env overrides, precedence, errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlcanary.config import (
    ConfigError,
    DataSettings,
    ModelSettings,
    ServingSettings,
    Settings,
    SyntheticDataSettings,
    TrainingSettings,
    load_settings,
)
from mlcanary.rollout.policy import parse_duration

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (the leaves a YAML profile sets)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _get(settings: Settings, dotted: str) -> Any:
    node: Any = settings
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def _config_error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(**kwargs)
    # The explanation is the message; pydantic's exception must not leak as the cause or context.
    assert not isinstance(excinfo.value.__cause__, ValidationError)
    assert excinfo.value.__suppress_context__ or not isinstance(excinfo.value.__context__, ValidationError)
    return str(excinfo.value)


# -- defaults --------------------------------------------------------------------------------------


def test_no_profile_file_means_embedded_defaults(tmp_path: Path) -> None:
    settings = load_settings("local", config_dir=tmp_path, env={})
    assert settings == Settings(profile="local")
    assert settings.model == ModelSettings()
    assert settings.training == TrainingSettings()
    assert settings.data == DataSettings()
    assert settings.serving == ServingSettings()


def test_default_profile_is_local_when_nothing_names_one(tmp_path: Path) -> None:
    assert load_settings(config_dir=tmp_path, env={}).profile == "local"


def test_embedded_default_ports_are_distinct() -> None:
    serving = ServingSettings()
    ports = [value for name, value in serving.model_dump().items() if name.endswith("_port")]
    assert len(ports) == len(set(ports)) >= 6


# -- the repository's real profiles ---------------------------------------------------------------


@pytest.mark.parametrize("profile", ["local", "demo", "kserve"])
def test_repo_profile_loads_and_reflects_its_file(profile: str) -> None:
    settings = load_settings(profile, config_dir=CONFIGS, env={})
    assert settings.profile == profile
    own = yaml.safe_load((CONFIGS / f"{profile}.yaml").read_text(encoding="utf-8"))
    own.pop("extends", None)
    for dotted, value in _flatten(own).items():
        actual = _get(settings, dotted)
        if isinstance(actual, Path):
            value = Path(value)
        elif isinstance(actual, timedelta):
            value = parse_duration(value)
        assert actual == value, dotted


def test_repo_demo_extends_local() -> None:
    local = load_settings("local", config_dir=CONFIGS, env={})
    demo = load_settings("demo", config_dir=CONFIGS, env={})
    demo_file = yaml.safe_load((CONFIGS / "demo.yaml").read_text(encoding="utf-8"))
    assert demo_file["extends"] == "local"
    assert demo.model.name == local.model.name
    assert demo.model.estimator == local.model.estimator
    assert demo.state_dir == Path(demo_file["state_dir"]) != local.state_dir
    # Whatever demo.yaml does not set comes from local.yaml.
    demo_sets = set(_flatten(demo_file))
    for dotted, value in _flatten(local.model_dump()).items():
        if dotted not in demo_sets and dotted != "profile":
            assert _flatten(demo.model_dump())[dotted] == value, dotted


def test_repo_kserve_profile_points_at_a_cluster_mlflow() -> None:
    settings = load_settings("kserve", config_dir=CONFIGS, env={})
    assert settings.serving.backend == "kserve"
    assert settings.tracking_uri == settings.mlflow.tracking_uri
    assert settings.tracking_uri.startswith("http")


# -- extends ---------------------------------------------------------------------------------------


def test_extends_inherits_and_overrides_with_deep_merge(tmp_path: Path) -> None:
    _write(
        tmp_path / "local.yaml",
        "model:\n  name: base-model\n  estimator: random_forest\ntraining:\n  seed: 11\n  test_size: 0.3\n",
    )
    _write(tmp_path / "demo.yaml", "extends: local\nstate_dir: demo-state\ntraining:\n  seed: 12\n")
    settings = load_settings("demo", config_dir=tmp_path, env={})
    assert settings.model.name == "base-model"
    assert settings.model.estimator == "random_forest"
    assert settings.training.seed == 12
    assert settings.training.test_size == 0.3  # sibling key of an overridden one survives the merge
    assert settings.state_dir == Path("demo-state")
    assert settings.profile == "demo"


def test_extends_accepts_a_file_name(tmp_path: Path) -> None:
    _write(tmp_path / "base.yml", "model:\n  name: from-base\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yml\n")
    assert load_settings(config_file=child, env={}).model.name == "from-base"


@pytest.mark.parametrize(
    "files",
    [
        {"local.yaml": "extends: local\n"},
        {"local.yaml": "extends: a\n", "a.yaml": "extends: local\n"},
        {"local.yaml": "extends: a\n", "a.yaml": "extends: b\n", "b.yaml": "extends: a\n"},
    ],
    ids=["self", "two", "three"],
)
def test_extends_cycle_is_a_config_error(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    message = _config_error(profile="local", config_dir=tmp_path, env={})
    assert "cycle" in message


def test_extends_cycle_through_dotdot_is_a_config_error(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    _write(profiles / "local.yaml", "extends: ../profiles/local\n")
    message = _config_error(profile="local", config_dir=profiles, env={})
    assert "cycle" in message


def test_extends_parent_missing_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "local.yaml", "extends: nowhere\n")
    message = _config_error(profile="local", config_dir=tmp_path, env={})
    assert "nowhere.yaml" in message
    assert "not found" in message


# -- environment overrides -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw", "dotted", "expected"),
    [
        ("MLCANARY_TRAINING__SEED", "7", "training.seed", 7),
        ("MLCANARY_DATA__SYNTHETIC__FRAUD_RATE", "0.1", "data.synthetic.fraud_rate", 0.1),
        ("MLCANARY_TRAINING__REPLACE_CANDIDATE", "true", "training.replace_candidate", True),
        ("MLCANARY_MODEL__ESTIMATOR", "random_forest", "model.estimator", "random_forest"),
        ("MLCANARY_STATE_DIR", "/tmp/elsewhere", "state_dir", Path("/tmp/elsewhere")),
        ("MLCANARY_DATA__FEATURES", "[amount, hour]", "data.features", ["amount", "hour"]),
        (
            "MLCANARY_MODEL__PARAMS",
            "{max_depth: 3, class_weight: balanced}",
            "model.params",
            {"max_depth": 3, "class_weight": "balanced"},
        ),
        ("MLCANARY_MODEL__PARAMS__HIDDEN", "[8, 4]", "model.params", {"HIDDEN": [8, 4]}),
    ],
)
def test_env_override_sets_typed_value(
    tmp_path: Path, variable: str, raw: str, dotted: str, expected: Any
) -> None:
    settings = load_settings("local", config_dir=tmp_path, env={variable: raw})
    value = _get(settings, dotted)
    assert value == expected
    assert type(value) is type(expected)


def test_env_override_of_one_leaf_keeps_file_siblings(tmp_path: Path) -> None:
    _write(tmp_path / "local.yaml", "data:\n  synthetic:\n    rows: 1234\n    seed: 5\n")
    settings = load_settings("local", config_dir=tmp_path, env={"MLCANARY_DATA__SYNTHETIC__SEED": "9"})
    assert settings.data.synthetic.seed == 9
    assert settings.data.synthetic.rows == 1234


def test_env_without_prefix_is_ignored(tmp_path: Path) -> None:
    settings = load_settings("local", config_dir=tmp_path, env={"TRAINING__SEED": "7", "SEED": "7"})
    assert settings.training.seed == TrainingSettings().seed != 7


def test_env_numeric_looking_value_for_a_string_field(tmp_path: Path) -> None:
    settings = load_settings("local", config_dir=tmp_path, env={"MLCANARY_MODEL__NAME": "2024"})
    assert settings.model.name == "2024"


# -- precedence: overrides > env > file > defaults ------------------------------------------------


@pytest.mark.parametrize(
    ("with_file", "with_env", "with_override", "expected"),
    [
        (False, False, False, TrainingSettings().seed),
        (True, False, False, 1),
        (True, True, False, 2),
        (False, True, False, 2),
        (True, True, True, 3),
        (True, False, True, 3),
        (False, False, True, 3),
    ],
)
def test_precedence(
    tmp_path: Path, with_file: bool, with_env: bool, with_override: bool, expected: int
) -> None:
    if with_file:
        _write(tmp_path / "local.yaml", "training:\n  seed: 1\n")
    env = {"MLCANARY_TRAINING__SEED": "2"} if with_env else {}
    overrides = {"training.seed": 3} if with_override else None
    settings = load_settings("local", config_dir=tmp_path, env=env, overrides=overrides)
    assert settings.training.seed == expected


def test_mlcanary_profile_env_picks_the_profile() -> None:
    settings = load_settings(config_dir=CONFIGS, env={"MLCANARY_PROFILE": "demo"})
    assert settings.profile == "demo"
    assert settings == load_settings("demo", config_dir=CONFIGS, env={})


def test_profile_argument_beats_mlcanary_profile_env() -> None:
    settings = load_settings("kserve", config_dir=CONFIGS, env={"MLCANARY_PROFILE": "demo"})
    assert settings.profile == "kserve"


def test_mlcanary_config_env_names_a_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "elsewhere" / "mine.yaml", "model:\n  name: from-env-file\n")
    settings = load_settings(config_dir=tmp_path, env={"MLCANARY_CONFIG": str(path)})
    assert settings.model.name == "from-env-file"


def test_mlcanary_config_dir_env_names_the_folder(tmp_path: Path) -> None:
    _write(tmp_path / "local.yaml", "model:\n  name: from-env-dir\n")
    settings = load_settings("local", env={"MLCANARY_CONFIG_DIR": str(tmp_path)})
    assert settings.model.name == "from-env-dir"


def test_reserved_env_names_are_not_settings(tmp_path: Path) -> None:
    # MLCANARY_PROFILE must pick a profile, not be validated as an unknown 'profile' override value.
    _write(tmp_path / "demo.yaml", "state_dir: d\n")
    settings = load_settings(config_dir=tmp_path, env={"MLCANARY_PROFILE": "demo"})
    assert settings.profile == "demo"
    assert settings.state_dir == Path("d")


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training:\n  test_size: 1.5\n", ["training.test_size", "less than 1", "1.5"]),
        ("training:\n  sed: 7\n", ["training.sed", "unknown field"]),
        ("trainig:\n  seed: 7\n", ["trainig", "unknown field"]),
        ("training:\n  seed: seven\n", ["training.seed", "integer", "seven"]),
        ("data:\n  synthetic:\n    rows: 10\n", ["data.synthetic.rows", "greater than or equal to 200"]),
        ("model:\n  estimator: xgboost\n", ["model.estimator", "xgboost"]),
        ("model:\n  name: 'bad name!'\n", ["model.name", "pattern", "bad name!"]),
        ("model:\n  name: -leading-dash\n", ["model.name", "pattern"]),
        ("model:\n  params: [1, 2]\n", ["model.params", "dictionary"]),
        ("data:\n  source: file\n", ["data", "data.path is required"]),
        ("serving:\n  champion_port: 8080\n", ["serving", "champion_port", "front_door_port", "8080"]),
        ("serving:\n  webhook_port: 70000\n", ["serving.webhook_port", "65535"]),
        ("profile: staging\n", ["profile", "staging"]),
    ],
)
def test_invalid_file_value_is_a_config_error_naming_file_field_and_problem(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = _write(tmp_path / "bad.yaml", text)
    message = _config_error(config_file=path, env={})
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training: [unclosed\n", "not valid YAML"),
        ("training:\n\tseed: 1\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("just a string\n", "expected a mapping at the top level, got str"),
        ("extends: 5\n", "extends"),
    ],
)
def test_unusable_file_is_a_config_error_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path / "bad.yaml", text)
    message = _config_error(config_file=path, env={})
    assert str(path) in message
    assert expected in message


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.yaml", "")
    assert load_settings(config_file=path, env={}).training == TrainingSettings()


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("MLCANARY_TRAINING__TEST_SIZE", "1.5", ["training.test_size", "less than 1"]),
        ("MLCANARY_TRAINING__SEED", "abc", ["training.seed", "abc"]),
        ("MLCANARY_SERVING__CANDIDATE_PORT", "0", ["serving.candidate_port", "greater than or equal to 1"]),
        ("MLCANARY_TRAINING__SEEED", "7", ["training.seeed", "unknown field"]),
    ],
)
def test_invalid_env_value_names_the_variable(
    tmp_path: Path, variable: str, raw: str, expected: list[str]
) -> None:
    _write(tmp_path / "local.yaml", "training:\n  seed: 1\n")
    message = _config_error(profile="local", config_dir=tmp_path, env={variable: raw})
    assert variable in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("MLCANARY_TRAINNG__SEED", "7"), ("MLCANARY_DATA__SOURCE", "file")],
    ids=["typo-in-section", "section-validator"],
)
def test_env_caused_error_on_a_parent_field_names_the_variable(
    tmp_path: Path, variable: str, raw: str
) -> None:
    path = _write(tmp_path / "local.yaml", "training:\n  seed: 1\n")
    message = _config_error(profile="local", config_dir=tmp_path, env={variable: raw})
    assert variable in message
    assert str(path) not in message


def test_invalid_override_names_the_override(tmp_path: Path) -> None:
    message = _config_error(profile="local", config_dir=tmp_path, env={}, overrides={"training.test_size": 0})
    assert "override training.test_size" in message
    assert "greater than 0" in message


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = _config_error(config_file=path, env={})
    assert str(path) in message
    assert "not found" in message


def test_missing_file_named_by_mlcanary_config(tmp_path: Path) -> None:
    path = tmp_path / "gone.yaml"
    message = _config_error(config_dir=tmp_path, env={"MLCANARY_CONFIG": str(path)})
    assert str(path) in message
    assert "not found" in message


@pytest.mark.parametrize("how", ["argument", "env"])
def test_unknown_profile_name(tmp_path: Path, how: str) -> None:
    if how == "argument":
        message = _config_error(profile="staging", config_dir=tmp_path, env={})
    else:
        message = _config_error(config_dir=tmp_path, env={"MLCANARY_PROFILE": "staging"})
    assert "staging" in message
    for known in ("local", "demo", "kserve"):
        assert known in message


@pytest.mark.parametrize("profile", ["demo", "kserve"])
def test_missing_non_local_profile_file_is_an_error(tmp_path: Path, profile: str) -> None:
    message = _config_error(profile=profile, config_dir=tmp_path, env={})
    assert str(tmp_path / f"{profile}.yaml") in message
    assert "not found" in message


def test_several_errors_are_all_listed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.yaml",
        "training:\n  test_size: 1.5\n  seed: -1\nmodel:\n  estimator: xgboost\n",
    )
    message = _config_error(config_file=path, env={"MLCANARY_SERVING__WEBHOOK_PORT": "0"})
    lines = message.splitlines()
    assert len(lines) == 1 + 4
    for fragment in ("training.test_size", "training.seed", "model.estimator", "serving.webhook_port"):
        assert sum(fragment in line for line in lines) == 1, fragment
    assert any("MLCANARY_SERVING__WEBHOOK_PORT" in line for line in lines)


# -- derived values and immutability -------------------------------------------------------------


def test_tracking_uri_defaults_to_sqlite_under_state_dir(tmp_path: Path) -> None:
    settings = load_settings(
        "local", config_dir=tmp_path, env={"MLCANARY_STATE_DIR": str(tmp_path / "state")}
    )
    expected = (tmp_path / "state" / "mlflow.db").resolve()
    assert settings.tracking_uri == f"sqlite:///{expected}"
    assert settings.registry_uri == settings.tracking_uri
    assert settings.artifact_location == (tmp_path / "state" / "mlartifacts").resolve().as_uri()


def test_tracking_uri_of_relative_state_dir_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings("local", config_dir=tmp_path / "none", env={})
    db = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    assert settings.tracking_uri.startswith("sqlite:///")
    assert db.is_absolute()
    assert db == (tmp_path / settings.state_dir / "mlflow.db").resolve()


def test_tracking_uri_honours_mlflow_settings(tmp_path: Path) -> None:
    env = {
        "MLCANARY_MLFLOW__TRACKING_URI": "http://mlflow.example:5000",
        "MLCANARY_MLFLOW__ARTIFACT_LOCATION": "s3://bucket/artifacts",
    }
    settings = load_settings("local", config_dir=tmp_path, env=env)
    assert settings.tracking_uri == "http://mlflow.example:5000"
    assert settings.registry_uri == "http://mlflow.example:5000"
    assert settings.artifact_location == "s3://bucket/artifacts"
    registry = load_settings(
        "local", config_dir=tmp_path, env={**env, "MLCANARY_MLFLOW__REGISTRY_URI": "http://reg:5001"}
    )
    assert registry.registry_uri == "http://reg:5001"
    assert registry.tracking_uri == "http://mlflow.example:5000"


@pytest.mark.parametrize(
    ("attribute_path", "value"),
    [
        ("state_dir", Path("x")),
        ("training.seed", 1),
        ("model.name", "other"),
        ("data.synthetic.rows", 500),
        ("serving.front_door_port", 1234),
    ],
)
def test_settings_are_frozen(tmp_path: Path, attribute_path: str, value: Any) -> None:
    settings = load_settings("local", config_dir=tmp_path, env={})
    *parents, leaf = attribute_path.split(".")
    owner: Any = settings
    for part in parents:
        owner = getattr(owner, part)
    before = getattr(owner, leaf)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(owner, leaf, value)
    assert getattr(owner, leaf) == before


def test_sections_validate_on_their_own() -> None:
    with pytest.raises(ValidationError):
        SyntheticDataSettings(fraud_rate=1.0)
    with pytest.raises(ValidationError):
        DataSettings(source="file")
    assert DataSettings(source="file", path=Path("x.csv")).path == Path("x.csv")


# -- the approval gate -----------------------------------------------------------------------------


def test_approval_gate_is_off_by_default_and_set_from_file_or_env(tmp_path: Path) -> None:
    assert not load_settings("local", config_dir=tmp_path, env={}).rollout.approval.required
    _write(tmp_path / "local.yaml", "rollout:\n  approval:\n    required: true\n    timeout: 2h\n")
    approval = load_settings(
        "local", config_dir=tmp_path, env={"MLCANARY_ROLLOUT__APPROVAL__ON_TIMEOUT": "promote"}
    ).rollout.approval
    assert approval.required
    assert approval.timeout == parse_duration("2h")
    assert approval.on_timeout == "promote"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rollout:\n  approval:\n    on_timeout: shrug\n", "on_timeout"),
        ("rollout:\n  approval:\n    timeout: soon\n", "not a duration"),
        ("rollout:\n  approval:\n    timeout: 0s\n", "approval.timeout must be positive"),
        ("rollout:\n  approval:\n    requird: true\n", "requird"),
    ],
    ids=["on_timeout", "timeout-text", "timeout-zero", "typo"],
)
def test_bad_approval_settings_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    _write(tmp_path / "local.yaml", text)
    message = _config_error(profile="local", config_dir=tmp_path, env={})
    assert fragment in message
    assert "local.yaml" in message


def test_shipped_rollout_policy_file_states_the_embedded_defaults() -> None:
    """configs/rollout.yaml documents the judge's defaults: loading it changes nothing."""
    from mlcanary.rollout.policy import RolloutPolicy

    shipped = RolloutPolicy.model_validate(yaml.safe_load((CONFIGS / "rollout.yaml").read_text()))
    assert shipped == RolloutPolicy()


def test_legacy_relative_flag_becomes_a_relative_tolerance() -> None:
    from mlcanary.rollout.policy import RolloutPolicy

    policy = RolloutPolicy.model_validate({"checks": {"latency": {"tolerance": 0.2, "relative": True}}})
    assert policy.checks["latency"].relative_tolerance == 0.2
    assert policy.checks["latency"].tolerance == 0.0


def test_alpha_is_split_by_weight_over_the_enabled_sequential_checks() -> None:
    from mlcanary.rollout.policy import RolloutPolicy

    policy = RolloutPolicy()
    sequential = ["error_rate", "latency", "latency_p95", "positive_rate", "agreement", "accuracy"]
    assert sum(policy.alpha_for(name) for name in sequential) == pytest.approx(policy.alpha)
    assert policy.alpha_for("error_rate") == pytest.approx(12 * policy.alpha_for("accuracy"))
    assert policy.alpha_for("error_rate") == pytest.approx(policy.alpha * 6 / 11)
    assert policy.alpha_for("input_drift") == 0.0  # advisory: spends nothing
    assert policy.alpha_for("recall") == 0.0  # disabled by default
    with_recall = RolloutPolicy.model_validate({"checks": {"recall": {"enabled": True}}})
    assert with_recall.alpha_for("recall") > 0
    assert sum(with_recall.alpha_for(n) for n in [*sequential, "recall"]) == pytest.approx(policy.alpha)


def test_a_wider_failure_margin_in_a_profile_widens_the_pass_margin_too() -> None:
    from mlcanary.rollout.policy import RolloutPolicy

    policy = RolloutPolicy.model_validate({"checks": {"error_rate": {"tolerance": 0.1}}})
    check = policy.checks["error_rate"]
    assert check.pass_margin == (0.1, 1.0)  # the shipped pass_relative_tolerance stays
    assert RolloutPolicy().checks["error_rate"].pass_margin == (0.002, 1.0)
