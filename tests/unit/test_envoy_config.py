"""Rendering of the local Envoy's bootstrap and routes, weights validation, and the atomic swap."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcanary.config import Settings
from mlcanary.serving.headers import ARM_HEADER, ARM_SERVED_HEADER, ROUTES_VERSION_HEADER
from mlcanary.serving.local.envoy import load_persisted_weights, new_version, write_routes
from mlcanary.serving.local.envoy_config import (
    EnvoyLayout,
    Upstream,
    Weights,
    render_bootstrap,
    render_routes,
    weights_from_route_config,
)


def layout_at(state_dir: Path, **changes: Any) -> EnvoyLayout:
    """The layout of the default settings in ``state_dir``, with ``changes``."""
    return dataclasses.replace(EnvoyLayout.from_settings(Settings(state_dir=state_dir)), **changes)


def _route_config(doc: dict[str, Any]) -> dict[str, Any]:
    (resource,) = doc["resources"]
    return resource


def _routes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    (vhost,) = _route_config(doc)["virtual_hosts"]
    return vhost["routes"]


# -- Weights -------------------------------------------------------------------------------------


def test_weights_canary_splits_percent() -> None:
    assert Weights.canary(20) == Weights(champion=80, candidate=20)
    assert Weights.canary(0) == Weights(100, 0)
    assert Weights.canary(100) == Weights(0, 100)
    assert Weights(80, 20).candidate_share == pytest.approx(0.2)
    assert Weights(4, 1).candidate_share == pytest.approx(0.2)
    assert Weights(80, 20).as_dict() == {"champion": 80, "candidate": 20}


def test_weights_zero_zero_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="at least one must be positive"):
        Weights(0, 0)


@pytest.mark.parametrize(
    ("champion", "candidate", "message"),
    [
        (-1, 50, "champion weight must be between 0 and 100"),
        (50, 101, "candidate weight must be between 0 and 100"),
        (80.0, 20, "champion weight must be an integer"),
        (80, True, "candidate weight must be an integer"),
        ("80", 20, "champion weight must be an integer"),
    ],
)
def test_weights_out_of_range_or_not_int_are_refused(champion: Any, candidate: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Weights(champion, candidate)


@pytest.mark.parametrize("percent", [-1, 101, 20.5, True])
def test_canary_percent_must_be_int_0_to_100(percent: Any) -> None:
    with pytest.raises(ValueError, match="canary percent"):
        Weights.canary(percent)


# -- routes --------------------------------------------------------------------------------------


def test_routes_are_a_discovery_response_with_validated_clusters() -> None:
    doc = render_routes(Weights(80, 20), "v1", route_config_name="my_routes")
    assert doc["version_info"] == "v1"
    rc = _route_config(doc)
    assert rc["@type"] == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert rc["name"] == "my_routes"
    assert rc["validate_clusters"] is True
    assert rc["response_headers_to_add"][0]["header"] == {"key": ROUTES_VERSION_HEADER, "value": "v1"}


def test_header_routes_come_before_the_weighted_catch_all() -> None:
    routes = _routes(render_routes(Weights(80, 20), "v1"))
    assert [r["name"] for r in routes] == ["force_candidate", "force_champion", "weighted_split"]
    for route, arm in zip(routes[:2], ["candidate", "champion"], strict=True):
        assert route["match"]["headers"] == [{"name": ARM_HEADER, "string_match": {"exact": arm}}]
        assert route["route"]["cluster"] == arm
        assert route["response_headers_to_add"][0]["header"] == {"key": ARM_SERVED_HEADER, "value": arm}
    assert routes[2]["match"] == {"prefix": "/"}
    assert "headers" not in routes[2]["match"]


def test_weighted_split_names_each_arm_and_its_weight() -> None:
    weighted = _routes(render_routes(Weights(0, 100), "v2", route_timeout_s=12.5))[2]["route"]
    assert weighted["timeout"] == "12.5s"
    clusters = weighted["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in clusters] == [("champion", 0), ("candidate", 100)]
    assert [c["response_headers_to_add"][0]["header"]["value"] for c in clusters] == ["champion", "candidate"]
    # Deprecated and ignored by Envoy 1.40; leaving it in would only mislead a reader.
    assert "total_weight" not in weighted["weighted_clusters"]


def test_routes_round_trip_through_yaml_and_back_to_weights() -> None:
    doc = render_routes(Weights(63, 37), "v3")
    loaded = yaml.safe_load(yaml.safe_dump(doc, sort_keys=False))
    assert loaded == doc
    assert weights_from_route_config(_route_config(loaded)) == Weights(63, 37)


def test_same_weights_with_new_version_is_a_different_route_config() -> None:
    # Envoy ignores an update whose RouteConfiguration hashes the same, so the version must be in it.
    a = _route_config(render_routes(Weights(80, 20), "a"))
    b = _route_config(render_routes(Weights(80, 20), "b"))
    assert a != b


@pytest.mark.parametrize("version", ["", "has space", 'quo"te', "x" * 129])
def test_unsafe_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="routes version"):
        render_routes(Weights(80, 20), version)


def test_new_version_is_valid_and_unique() -> None:
    versions = {new_version(Weights(80, 20)) for _ in range(50)}
    assert len(versions) == 50
    for version in versions:
        assert version.startswith("80-20-")
        render_routes(Weights(80, 20), version)


def test_weights_from_route_config_without_weighted_route_fails() -> None:
    with pytest.raises(ValueError, match="no weighted route"):
        weights_from_route_config({"name": "r", "virtual_hosts": [{"routes": [{"route": {"cluster": "x"}}]}]})


# -- bootstrap -----------------------------------------------------------------------------------


def _hcm(boot: dict[str, Any]) -> dict[str, Any]:
    (listener,) = boot["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"]


def test_bootstrap_listens_where_the_layout_says(tmp_path: Path) -> None:
    layout = layout_at(tmp_path, listener_port=18080, admin_port=19901)
    boot = render_bootstrap(layout)
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    (listener,) = boot["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}


def test_bootstrap_reads_routes_from_the_watched_rds_directory(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    hcm = _hcm(render_bootstrap(layout))
    assert hcm["rds"]["route_config_name"] == layout.route_config_name
    source = hcm["rds"]["config_source"]["path_config_source"]
    assert source["path"] == str(tmp_path / "envoy" / "rds" / "routes.yaml")
    assert source["watched_directory"]["path"] == str(tmp_path / "envoy" / "rds")


def test_bootstrap_keeps_client_request_ids_and_logs_json(tmp_path: Path) -> None:
    hcm = _hcm(render_bootstrap(layout_at(tmp_path)))
    assert hcm["preserve_external_request_id"] is True
    assert hcm["generate_request_id"] is True
    log, proxy_errors = hcm["access_log"]
    assert log["typed_config"]["path"] == str(tmp_path / "envoy" / "logs" / "access.log")
    assert "filter" not in log
    assert proxy_errors["typed_config"]["path"] == str(tmp_path / "envoy" / "logs" / "proxy-errors.log")
    assert proxy_errors["filter"] == {"response_flag_filter": {}}
    assert proxy_errors["typed_config"]["log_format"] == log["typed_config"]["log_format"]
    fields = log["typed_config"]["log_format"]["json_format"]
    assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"
    assert fields["arm_header"] == "%REQ(X-MLCANARY-ARM)%"
    for key in ("upstream_cluster", "response_code", "response_flags", "duration_ms", "arm_served"):
        assert key in fields


def test_bootstrap_clusters_point_at_the_two_arms(tmp_path: Path) -> None:
    layout = layout_at(
        tmp_path, champion=Upstream(port=18081), candidate=Upstream(host="localhost", port=18082)
    )
    clusters = {c["name"]: c for c in render_bootstrap(layout)["static_resources"]["clusters"]}
    assert set(clusters) == {"champion", "candidate"}
    assert clusters["champion"]["type"] == "STATIC"
    assert clusters["candidate"]["type"] == "STRICT_DNS"
    assert clusters["champion"]["connect_timeout"] == "1s"
    endpoint = clusters["candidate"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "localhost", "port_value": 18082}


# -- layout --------------------------------------------------------------------------------------


def test_layout_paths_are_absolute_under_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    layout = layout_at(Path("state"))
    assert layout.routes_path == tmp_path / "state" / "envoy" / "rds" / "routes.yaml"
    assert layout.bootstrap_path == tmp_path / "state" / "envoy" / "bootstrap.yaml"
    assert layout.access_log_path == tmp_path / "state" / "envoy" / "logs" / "access.log"
    assert layout.rds_stat_prefix == "http.ingress_http.rds.mlcanary_routes."


def test_layout_from_default_settings_uses_the_documented_ports() -> None:
    layout = EnvoyLayout.from_settings(Settings())
    assert (layout.listener_port, layout.admin_port) == (8080, 9901)
    assert (layout.champion.port, layout.candidate.port) == (8081, 8082)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"listener_port": 70000}, "listener_port"),
        ({"listener_port": 9000, "admin_port": 9000}, "both 9000"),
        ({"route_config_name": "bad name"}, "route_config_name"),
        ({"connect_timeout_s": 0}, "connect_timeout_s"),
    ],
)
def test_layout_refuses_bad_values(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layout_at(tmp_path, **kwargs)


# -- atomic swap ---------------------------------------------------------------------------------


def test_write_routes_renames_a_complete_file_and_persists_weights(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    write_routes(layout, Weights(80, 20), "v1")
    first_inode = os.stat(layout.routes_path).st_ino
    write_routes(layout, Weights(50, 50), "v2")

    loaded = yaml.safe_load(layout.routes_path.read_text())
    assert loaded == render_routes(Weights(50, 50), "v2")
    # A new inode proves a rename, the only change Envoy's directory watch reacts to.
    assert os.stat(layout.routes_path).st_ino != first_inode
    assert sorted(p.name for p in layout.rds_dir.iterdir()) == ["routes.yaml"]
    persisted = json.loads(layout.weights_path.read_text())
    assert (persisted["champion"], persisted["candidate"], persisted["version"]) == (50, 50, "v2")
    assert load_persisted_weights(layout) == Weights(50, 50)


def test_write_routes_refuses_invalid_weights_without_touching_files(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    write_routes(layout, Weights(80, 20), "v1")
    before = (layout.routes_path.read_bytes(), layout.weights_path.read_bytes())
    forged = object.__new__(Weights)  # bypasses __post_init__, as a buggy caller might
    object.__setattr__(forged, "champion", 0)
    object.__setattr__(forged, "candidate", 0)
    with pytest.raises(ValueError, match="at least one must be positive"):
        write_routes(layout, forged, "v2")
    with pytest.raises(ValueError, match="routes version"):
        write_routes(layout, Weights(50, 50), "bad version")
    assert (layout.routes_path.read_bytes(), layout.weights_path.read_bytes()) == before


def test_load_persisted_weights_ignores_missing_or_bad_file(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    assert load_persisted_weights(layout) is None
    layout.envoy_dir.mkdir(parents=True)
    layout.weights_path.write_text('{"champion": 0, "candidate": 0}')
    assert load_persisted_weights(layout) is None
    layout.weights_path.write_text("not json")
    assert load_persisted_weights(layout) is None
