"""End to end on a real cluster with KServe and Istio (``deploy/e2e/kind-kserve.sh`` builds one with
kind). Skipped when no cluster is reachable: nothing here is faked.

The models are KServe's public sklearn samples (``gs://kfserving-examples``), served by the sklearn
runtime, so the run needs no MLflow: it exercises the backend against the real KServe controller —
the canary on ``canaryTrafficPercent``, a step, the promotion, a canary whose model cannot load, and
the durable rollback. Namespace: ``MLCANARY_E2E_NAMESPACE`` (default ``mlcanary-e2e``, created).
"""

from __future__ import annotations

import os
import uuid

import pytest

pytestmark = pytest.mark.e2e

SAMPLES = {
    "1": "gs://kfserving-examples/models/sklearn/1.0/model",
    "2": "gs://kfserving-examples/models/sklearn/1.0/model-2",
    "3": "gs://kfserving-examples/models/sklearn/1.0/no-such-model",
}


def _cluster_or_skip():  # type: ignore[no-untyped-def]
    try:
        from kubernetes import client, config

        config.load_kube_config(context=os.environ.get("MLCANARY_E2E_CONTEXT"))
        api = client.ApiextensionsV1Api()
        api.read_custom_resource_definition("inferenceservices.serving.kserve.io", _request_timeout=5)
    except Exception as exc:  # no kubeconfig, no cluster, or no KServe: the e2e run is not possible here
        pytest.skip(f"no Kubernetes cluster with KServe reachable ({type(exc).__name__}: {str(exc)[:120]})")
    return client


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    client = _cluster_or_skip()
    from mlcanary.config import KServeSettings
    from mlcanary.serving.kserve.backend import KServeBackend
    from mlcanary.serving.kserve.kube import KubeApi, api_client

    namespace = os.environ.get("MLCANARY_E2E_NAMESPACE", "mlcanary-e2e")
    core = client.CoreV1Api()
    try:
        core.create_namespace({"metadata": {"name": namespace}})
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    settings = KServeSettings(
        namespace=namespace,
        runtime="sklearn",
        service_account=None,
        logger_url=None,
        resources={"requests": {"cpu": "50m", "memory": "256Mi"}},
        ready_timeout_s=600,
        context=os.environ.get("MLCANARY_E2E_CONTEXT"),
    )
    api = KubeApi(api_client(context=settings.context), timeout_s=30)
    return KServeBackend(settings, api, lambda model, version: SAMPLES[version])


def test_canary_step_promote_then_broken_canary_and_durable_rollback(backend) -> None:  # type: ignore[no-untyped-def]
    model = f"e2e-{uuid.uuid4().hex[:6]}"
    try:
        status = backend.deploy(model, "1", "2", 20)
        assert status.traffic == {"champion": 80, "candidate": 20}, status
        assert backend.set_traffic(model, 50).traffic == {"champion": 50, "candidate": 50}
        promoted = backend.promote(model)
        assert promoted.arms["champion"].version == "2"
        assert promoted.traffic == {"champion": 100, "candidate": 0}

        broken = backend.deploy(model, "2", "3", 20)
        assert not broken.arms["candidate"].ready, broken
        assert broken.traffic == {"champion": 100, "candidate": 0}, broken
        rolled = backend.rollback(model)
        assert rolled.arms["champion"].version == "2"
        assert rolled.traffic == {"champion": 100, "candidate": 0}
    finally:
        backend.api.delete(backend.knative.ref(model))
