"""deploy/k8s after ``kustomize build``: KServe and Istio objects validate against the real CRD
schemas, core objects against Kubernetes' own OpenAPI schemas (``kubernetes-validate``, strict), the
Prefect work pool's job template renders a valid Job, and the Role grants what the backend does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from fake_kube import kustomize, schemas
from fake_kube.controller import FakeKServe
from fake_kube.server import FakeKubeApi
from fake_kube.world import make_backend

REPO_ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = REPO_ROOT / "deploy" / "k8s" / "overlays"
KUBERNETES = "1.32.0"  # KServe v0.20 supports 1.30+; kind's default node image is 1.32


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


@pytest.fixture(scope="module", params=["knative", "standard"])
def built(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize.build(OVERLAYS / request.param)


def validate(obj: dict[str, Any]) -> list[str]:
    if schemas.has_schema(obj):
        return schemas.errors(obj)
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


def test_every_object_validates(built: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objects = built
    problems = {}
    unchecked = []
    for obj in objects:
        if obj["kind"] == "Gateway":
            unchecked.append(obj["metadata"]["name"])  # no Gateway CRD among the reference schemas
            continue
        found = validate(obj)
        if found:
            problems[key(obj)] = found
    assert problems == {}
    assert unchecked == (["mlcanary-gateway"] if overlay == "standard" else [])
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "InferenceService",
    } <= kinds
    isvc = next(o for o in objects if o["kind"] == "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == overlay.capitalize()
    assert isvc["spec"]["predictor"]["logger"]["url"].startswith("http://mlcanary-collector.mlcanary.svc")


def test_the_validators_catch_mistakes() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "imagee": "typo"}]}}},
    }
    assert any("imagee" in p for p in validate(deployment))


def test_our_own_builder_matches_kubectl_kustomize() -> None:
    if kustomize.kubectl() is None:
        pytest.skip("kubectl is not installed: nothing to compare the fallback builder with")
    for overlay in ("knative", "standard"):
        ours = sorted(kustomize.build_here(OVERLAYS / overlay), key=key)
        theirs = sorted(kustomize.build_with_kubectl(OVERLAYS / overlay), key=key)
        assert ours == theirs


def test_the_prefect_work_pool_job_template_renders_a_valid_job() -> None:
    template = json.loads(
        (REPO_ROOT / "deploy" / "prefect" / "kubernetes-base-job-template.json").read_text()
    )
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    values = defaults | {
        "name": "canary-monitor-abc",
        "command": "python -m prefect.engine",
        "env": {},
        "labels": {},
    }

    def render(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [render(v) for v in node]
        if isinstance(node, str) and node.startswith("{{ ") and node.endswith(" }}"):
            value = values[node[3:-3]]
            return value.split() if node == "{{ command }}" else value
        return node

    job = render(template["job_configuration"]["job_manifest"])
    job["spec"]["template"]["spec"]["containers"][0]["env"] = []
    assert validate(job) == []
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "mlcanary"


def test_the_role_grants_every_call_the_backend_makes(built: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = built
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "mlcanary")
    granted = {
        (group, resource, verb)
        for r in role["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    used: set[tuple[str, str, str]] = set()
    for mode in ("Knative", "Standard"):
        with FakeKubeApi() as api, FakeKServe(api):
            backend = make_backend(api, deployment_mode=mode)
            backend.deploy("fraud", "1", "2", 20)
            backend.set_traffic("fraud", 50)
            backend.promote("fraud")
            backend.deploy("fraud", "2", "3", 20)
            backend.rollback("fraud")
            for request in api.requests:
                parts = request.path.split("?")[0].split("/")
                group, resource = parts[2], parts[6]
                verb = {
                    "GET": "watch" if "watch=" in request.path else ("get" if len(parts) > 7 else "list"),
                    "POST": "create",
                    "PATCH": "patch",
                    "DELETE": "delete",
                }[request.method]
                used.add(("" if group == "v1" else group, resource, verb))
    assert used - granted == set()
    assert ("serving.kserve.io", "inferenceservices", "patch") in used
