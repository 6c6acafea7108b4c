"""`mlcanary --profile kserve release | status | step | promote | rollback | traffic` act on a
cluster: here the fake Kubernetes API server with KServe's controller, and the real MLflow registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fake_kube.controller import FakeKServe
from fake_kube.server import FakeKubeApi
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mlcanary.cli.main import app

REPO_ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


@pytest.fixture
def cluster_env(
    make_settings, api: FakeKubeApi, kserve: FakeKServe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:  # type: ignore[no-untyped-def]
    """The kserve profile pointed at the fake cluster and the session's MLflow store; returns the model."""
    settings = make_settings()
    name = settings.model.name
    env = {
        "MLCANARY_PROFILE": "kserve",
        "MLCANARY_CONFIG_DIR": str(REPO_ROOT / "configs"),
        "MLCANARY_STATE_DIR": str(tmp_path),
        "MLCANARY_MODEL__NAME": name,
        "MLCANARY_MLFLOW__TRACKING_URI": settings.tracking_uri,
        "MLCANARY_MLFLOW__ARTIFACT_LOCATION": (tmp_path / "artifacts").as_uri(),
        "MLCANARY_KSERVE__API_URL": api.url,
        "MLCANARY_KSERVE__READY_TIMEOUT_S": "10",
        "MLCANARY_KSERVE__BACKOFF_S": "0.01",
        "MLCANARY_TELEMETRY__STORE_URL": f"sqlite:///{tmp_path / 'inference.db'}",
        "MLCANARY_TELEMETRY__PROMETHEUS__URL": "null",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    client.create_registered_model(name)
    for version in ("1", "2"):
        client.create_model_version(name, source=f"s3://mlflow/{name}/{version}")
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "candidate", "2")
    return name


def cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def status() -> dict[str, Any]:
    return json.loads(cli("status", "--json").stdout)


def served_uri(api: FakeKubeApi, name: str) -> str:
    obj = api.store.get(("serving.kserve.io", "inferenceservices", "mlcanary", name))
    assert obj is not None
    return obj["spec"]["predictor"]["model"]["storageUri"]


def test_release_step_promote_then_release_rollback_on_the_cluster(
    cluster_env: str, api: FakeKubeApi
) -> None:
    name = cluster_env
    assert "progressing" in cli("release").output
    now = status()
    assert now["phase"] == "progressing"
    assert now["traffic"] == {"champion": 80, "candidate": 20}
    assert served_uri(api, name) == f"s3://mlflow/{name}/2"
    step = json.loads(cli("step", "--json").stdout)
    assert step["decision"]["action"] == "hold"  # no traffic measured yet: never promote on no data
    cli("promote")
    now = status()
    assert (now["phase"], now["champion_version"], now["traffic"]) == (
        "promoted",
        "2",
        {"champion": 100, "candidate": 0},
    )

    client = MlflowClient(tracking_uri=json.loads(cli("config", "--json").stdout)["mlflow"]["tracking_uri"])
    client.create_model_version(name, source=f"s3://mlflow/{name}/3")
    client.set_registered_model_alias(name, "candidate", "3")
    cli("release")
    assert status()["traffic"] == {"champion": 80, "candidate": 20}
    cli("rollback", "--reason", "on-call said no")
    now = status()
    assert (now["phase"], now["champion_version"], now["traffic"]) == (
        "rolled_back",
        "2",
        {"champion": 100, "candidate": 0},
    )
    assert served_uri(api, name) == f"s3://mlflow/{name}/2"  # the rejected model is gone from the spec


class Ingress:
    """Stands in for the Istio ingress gateway: records what `traffic` sends, answers V2."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append((self.headers["Host"], self.path, body))
                data = json.dumps(
                    {
                        "model_name": "m",
                        "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def ingress() -> Iterator[Ingress]:
    gateway = Ingress()
    threading.Thread(target=gateway.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield gateway
    gateway.server.shutdown()
    gateway.server.server_close()


def test_traffic_goes_through_the_ingress_with_the_inference_services_host(
    cluster_env: str, ingress: Ingress
) -> None:
    name = cluster_env
    cli("release")
    result = cli("traffic", "--url", ingress.url, "--requests", "3", "--no-feedback", "--json")
    assert json.loads(result.stdout)["total"]["ok"] == 3
    hosts = {host for host, _, _ in ingress.seen}
    paths = {path for _, path, _ in ingress.seen}
    assert hosts == {f"{name}.mlcanary.example.com"}  # from the InferenceService's status.url
    assert paths == {f"/v2/models/{name}/infer"}  # MLServer speaks V2
    body = ingress.seen[0][2]
    assert body["parameters"] == {"content_type": "pd"}
    assert {tensor["shape"][0] for tensor in body["inputs"]} == {1}


def test_traffic_without_an_ingress_says_how_to_get_one(cluster_env: str) -> None:
    result = runner.invoke(app, ["traffic", "--requests", "1"])
    assert result.exit_code == 1
    assert "port-forward" in result.output
