"""KServeBackend in Knative mode, driven through the real ``kubernetes`` client over HTTP against a
fake API server whose KServe controller creates revisions, readies them and computes ``traffic[]``."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fake_kube.controller import FakeKServe
from fake_kube.server import FakeKubeApi
from fake_kube.world import storage_uri

from mlcanary.rollout.serving import ServingError
from mlcanary.serving.kserve.backend import KServeBackend
from mlcanary.serving.kserve.objects import ANN_CHAMPION, ANN_RELEASE, ANN_VERSION, MODE_ANNOTATION

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/mlcanary/inferenceservices"


def isvc(api: FakeKubeApi, name: str = "fraud") -> dict[str, Any]:
    obj = api.store.get(("serving.kserve.io", "inferenceservices", "mlcanary", name))
    assert obj is not None
    return obj


def shares_over_time(api: FakeKubeApi, since_rv: int, revision: str) -> list[int]:
    """The percent ``revision`` had in every status the controller wrote after ``since_rv``."""
    found = []
    for event in api.store.events:
        if event.rv <= since_rv or event.key[1] != "inferenceservices":
            continue
        traffic = (((event.obj.get("status") or {}).get("components") or {}).get("predictor") or {}).get(
            "traffic"
        ) or []
        found.append(sum(e["percent"] for e in traffic if e.get("revisionName") == revision))
    return found


def test_first_deploy_creates_the_champion_then_a_canary_is_one_update(
    api: FakeKubeApi, backend: KServeBackend
) -> None:
    status = backend.deploy("fraud", "1", "2", 20)
    assert status.traffic == {"champion": 80, "candidate": 20}
    assert status.arms["champion"].version == "1"
    assert status.arms["candidate"].version == "2"
    assert status.arms["candidate"].ready
    # Created without the canary field (it has no effect on a first deploy), then one merge patch
    # carrying the new model, the percent and the release annotations together.
    created = api.calls("POST", ISVC)
    assert len(created) == 1
    assert "canaryTrafficPercent" not in created[0].body["spec"]["predictor"]
    assert created[0].body["metadata"]["annotations"][MODE_ANNOTATION] == "Knative"
    patches = api.calls("PATCH", ISVC)
    assert len(patches) == 1
    patch = patches[0]
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert patch.body["spec"]["predictor"]["model"]["storageUri"] == storage_uri("fraud", "2")
    assert patch.body["metadata"]["resourceVersion"]  # optimistic concurrency
    annotations = isvc(api)["metadata"]["annotations"]
    assert annotations[ANN_RELEASE] == "fraud/2"
    assert annotations[ANN_VERSION] == "2"
    assert annotations[ANN_CHAMPION] == "1"


def test_step_promote_and_idempotence(api: FakeKubeApi, backend: KServeBackend) -> None:
    backend.deploy("fraud", "1", "2", 20)
    assert backend.set_traffic("fraud", 50).traffic == {"champion": 50, "candidate": 50}
    before = len(api.calls("PATCH"))
    assert backend.set_traffic("fraud", 50).traffic == {"champion": 50, "candidate": 50}
    assert len(api.calls("PATCH")) == before  # nothing to change: nothing written
    promoted = backend.promote("fraud")
    assert promoted.traffic == {"champion": 100, "candidate": 0}
    assert promoted.arms["champion"].version == "2"
    assert "candidate" not in promoted.arms
    last = api.calls("PATCH")[-1].body
    assert last["spec"]["predictor"]["canaryTrafficPercent"] is None  # merge patch null removes it
    predictor = isvc(api)["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == "fraud-predictor-00002"
    patches = len(api.calls("PATCH"))
    assert backend.promote("fraud").arms["champion"].version == "2"
    assert len(api.calls("PATCH")) == patches
    # The same deploy again changes nothing either.
    writes = len(api.calls("PATCH")) + len(api.calls("POST"))
    backend.deploy("fraud", "2")
    assert len(api.calls("PATCH")) + len(api.calls("POST")) == writes


def test_durable_rollback_never_sends_traffic_back_to_the_bad_model(
    api: FakeKubeApi, backend: KServeBackend
) -> None:
    backend.deploy("fraud", "1", "2", 20)
    backend.set_traffic("fraud", 50)
    bad = isvc(api)["status"]["components"]["predictor"]["latestCreatedRevision"]
    since = api.store.rv
    status = backend.rollback("fraud")
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert status.arms["champion"].version == "1"
    # pin 0 → restore the champion's model while pinned → unpin once that revision is ready
    patches = [p.body["spec"]["predictor"] for p in api.calls("PATCH")[-3:]]
    assert patches[0] == {"canaryTrafficPercent": 0}
    assert patches[1]["canaryTrafficPercent"] == 0
    assert patches[1]["model"]["storageUri"] == storage_uri("fraud", "1")
    assert patches[2] == {"canaryTrafficPercent": None}
    shares = shares_over_time(api, since, bad)
    assert shares[0] == 50
    assert all(share == 0 for share in shares[1:])
    obj = isvc(api)
    assert obj["spec"]["predictor"]["model"]["storageUri"] == storage_uri("fraud", "1")
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert ANN_RELEASE not in obj["metadata"]["annotations"]
    assert backend.rollback("fraud").traffic == {"champion": 100, "candidate": 0}  # a no-op now


def test_a_rollback_after_a_promotion_restores_the_new_champion(
    api: FakeKubeApi, backend: KServeBackend
) -> None:
    backend.deploy("fraud", "1", "2", 20)
    backend.promote("fraud")
    backend.deploy("fraud", "2", "3", 20)
    status = backend.rollback("fraud")
    assert status.arms["champion"].version == "2"
    assert isvc(api)["spec"]["predictor"]["model"]["storageUri"] == storage_uri("fraud", "2")


def test_a_rollback_interrupted_while_pinned_is_finished_by_the_next_call(
    api: FakeKubeApi, backend: KServeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcanary.serving.kserve.knative import KnativeRollout

    backend.deploy("fraud", "1", "2", 50)
    bad = isvc(api)["status"]["components"]["predictor"]["latestCreatedRevision"]
    since = api.store.rv

    def crash(*args: object) -> None:
        raise RuntimeError("the process died here")

    with monkeypatch.context() as m:
        m.setattr(KnativeRollout, "_restore_champion", crash)
        with pytest.raises(RuntimeError):
            backend.rollback("fraud")
    pinned = backend.status("fraud")
    assert pinned.traffic == {"champion": 100, "candidate": 0}  # safe while interrupted
    status = backend.rollback("fraud")
    assert status.arms["champion"].version == "1"
    assert isvc(api)["spec"]["predictor"]["model"]["storageUri"] == storage_uri("fraud", "1")
    assert all(share == 0 for share in shares_over_time(api, since, bad)[1:])


def test_a_resumed_deploy_converges_on_the_requested_percent(
    api: FakeKubeApi, backend: KServeBackend
) -> None:
    backend.deploy("fraud", "1", "2", 20)
    assert backend.deploy("fraud", "1", "2", 50).traffic == {"champion": 50, "candidate": 50}
    assert backend.deploy("fraud", "1", "2", 50).traffic == {"champion": 50, "candidate": 50}


def test_the_naive_rollback_is_the_trap_the_durable_one_avoids(
    api: FakeKubeApi, backend: KServeBackend
) -> None:
    """What the fake controller must reproduce for the test above to mean anything: 0 % then
    removing the field sends everything to the bad model again."""
    backend.deploy("fraud", "1", "2", 20)
    api.store.write(
        ("serving.kserve.io", "inferenceservices", "mlcanary", "fraud"),
        lambda o: {**o, "spec": {"predictor": {**o["spec"]["predictor"], "canaryTrafficPercent": 0}}},
    )
    time.sleep(0.3)
    api.store.write(
        ("serving.kserve.io", "inferenceservices", "mlcanary", "fraud"),
        lambda o: {
            **o,
            "spec": {
                "predictor": {k: v for k, v in o["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
            },
        },
    )
    deadline = time.monotonic() + 5
    while backend.status("fraud").arms["champion"].version != "2" and time.monotonic() < deadline:
        time.sleep(0.02)
    status = backend.status("fraud")
    assert status.arms["champion"].version == "2"  # the rejected model serves 100 %
    assert status.traffic == {"champion": 100, "candidate": 0}


def test_a_canary_that_never_gets_ready_reports_why_and_gets_no_traffic(
    api: FakeKubeApi, kserve: FakeKServe, backend: KServeBackend
) -> None:
    backend.deploy("fraud", "1")
    kserve.break_model(storage_uri("fraud", "2"), "failed to load model: sklearn version mismatch")
    status = backend.deploy("fraud", "1", "2", 20)  # returns: the judge must see it, not a hung start
    candidate = status.arms["candidate"]
    assert not candidate.ready
    assert "ModelLoadFailed" in (candidate.detail or "")
    assert "sklearn version mismatch" in (candidate.detail or "")
    # KServe sends the canary's 20 % to the latest *ready* revision: the champion's. We say so.
    assert status.traffic == {"champion": 100, "candidate": 0}
    assert "not ready" in (status.detail or "")
    assert isvc(api)["spec"]["predictor"]["canaryTrafficPercent"] == 20
    with pytest.raises(ServingError, match="not ready"):
        backend.set_traffic("fraud", 50)
    with pytest.raises(ServingError, match="refusing to promote"):
        backend.promote("fraud")
    rolled = backend.rollback("fraud")
    assert rolled.traffic == {"champion": 100, "candidate": 0}
    assert rolled.arms["champion"].version == "1"
    assert rolled.arms["champion"].ready


def test_a_revision_that_stays_pending_times_out_as_not_ready(make, kserve: FakeKServe) -> None:  # type: ignore[no-untyped-def]
    backend = make(ready_timeout_s=0.5)
    backend.deploy("fraud", "1")
    kserve.never_ready.add(storage_uri("fraud", "2"))
    status = backend.deploy("fraud", "1", "2", 20)
    assert not status.arms["candidate"].ready
    assert "not ready after 0.5s" in (status.detail or "")
    assert status.traffic == {"champion": 100, "candidate": 0}


def test_readiness_waits_for_the_new_revision_not_for_a_stale_ready_status(
    api: FakeKubeApi, kserve: FakeKServe, backend: KServeBackend
) -> None:
    """Right after the patch the old status still says Ready with latestCreated == latestReady: a
    backend trusting it (or observedGeneration) would return before the canary exists."""
    backend.deploy("fraud", "1")
    kserve.paused.set()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(backend.deploy("fraud", "1", "2", 20)))
    worker.start()
    time.sleep(0.4)
    assert results == []  # still waiting although Ready is True and the generations moved
    stale = isvc(api)
    assert stale["status"]["conditions"][-1] == {**stale["status"]["conditions"][-1], "status": "True"}
    kserve.paused.clear()
    worker.join(timeout=10)
    assert results
    assert results[0].traffic == {"champion": 80, "candidate": 20}


def test_a_conflicting_write_is_read_again_and_decided_again(
    api: FakeKubeApi, backend: KServeBackend
) -> None:
    backend.deploy("fraud", "1", "2", 20)
    api.fail("PATCH", 409)
    assert backend.set_traffic("fraud", 50).traffic == {"champion": 50, "candidate": 50}
    attempts = api.calls("PATCH")[-2:]
    assert [a.body["spec"]["predictor"]["canaryTrafficPercent"] for a in attempts] == [50, 50]
    # Both attempts carry the resourceVersion of the read they were decided on.
    assert all(a.body["metadata"]["resourceVersion"] for a in attempts)
    assert len(api.calls("GET", "inferenceservices/fraud")) >= 2


def test_a_real_concurrent_writer_forces_a_new_decision(api: FakeKubeApi, backend: KServeBackend) -> None:
    """Another client writes between our read and our patch: the API server refuses the patch's
    stale resourceVersion (409), and the step is decided again on what is there now."""
    backend.deploy("fraud", "1", "2", 20)
    key = ("serving.kserve.io", "inferenceservices", "mlcanary", "fraud")
    api.fail(
        "PATCH",
        lambda: api.store.write(
            key, lambda o: {**o, "metadata": {**o["metadata"], "labels": {"touched": "yes"}}}
        ),
    )
    backend.set_traffic("fraud", 50)
    first, second = api.calls("PATCH")[-2:]
    assert first.body["metadata"]["resourceVersion"] != second.body["metadata"]["resourceVersion"]
    assert isvc(api)["metadata"]["labels"] == {"touched": "yes"}  # their write survived
    assert isvc(api)["spec"]["predictor"]["canaryTrafficPercent"] == 50  # and so did ours


def test_server_errors_and_timeouts_are_retried_with_backoff(make, api: FakeKubeApi) -> None:  # type: ignore[no-untyped-def]
    backend = make(request_timeout_s=0.5)
    backend.deploy("fraud", "1", "2", 20)
    api.fail("GET", 500, count=2, path_contains="inferenceservices/fraud")
    api.fail("PATCH", 503)
    assert backend.set_traffic("fraud", 50).traffic == {"champion": 50, "candidate": 50}
    # A reply lost after the write was applied: the retry meets 409 (stale version), reads again
    # and finds nothing left to do.
    api.fail("PATCH", "hang-after-apply", seconds=1)
    assert backend.set_traffic("fraud", 20).traffic == {"champion": 80, "candidate": 20}


def test_an_api_that_stays_down_is_a_clear_error(make, api: FakeKubeApi) -> None:  # type: ignore[no-untyped-def]
    backend = make(retries=2, request_timeout_s=0.2)
    api.fail("GET", "hang", count=5, seconds=0.5)
    with pytest.raises(ServingError, match="Kubernetes API unreachable after 3 attempts"):
        backend.status("fraud")
    api.faults.clear()
    api.fail("GET", 500, count=5)
    with pytest.raises(Exception, match="500"):
        backend.status("fraud")


def test_old_mode_names_are_read_in_both_spellings(api: FakeKubeApi, backend: KServeBackend) -> None:
    from mlcanary.serving.kserve.objects import DeploymentMode

    for spelling, mode in (
        ("Serverless", DeploymentMode.KNATIVE),
        ("Knative", DeploymentMode.KNATIVE),
        ("RawDeployment", DeploymentMode.STANDARD),
        ("Standard", DeploymentMode.STANDARD),
    ):
        name = f"m-{spelling.lower()}"
        api.store.create(
            ("serving.kserve.io", "inferenceservices", "mlcanary", name),
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": name, "annotations": {MODE_ANNOTATION: spelling}},
                "spec": {
                    "predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://x"}}
                },
            },
        )
        assert backend.mode(name) is mode
    assert backend.mode("not-there") is DeploymentMode.KNATIVE  # the configured default


def test_workloads_and_logger_sources_map_to_arms(api: FakeKubeApi, backend: KServeBackend) -> None:
    backend.deploy("fraud", "1", "2", 20)
    assert backend.workloads("fraud") == {
        "champion": ["fraud-predictor-00001-deployment"],
        "candidate": ["fraud-predictor-00002-deployment"],
    }
    # Knative routes a revision through its public and private Services (the proxy errors query).
    assert backend.services("fraud") == {
        "champion": ["fraud-predictor-00001", "fraud-predictor-00001-private"],
        "candidate": ["fraud-predictor-00002", "fraud-predictor-00002-private"],
    }
    assert backend.arm_of_pod("fraud", "fraud-predictor-00002-deployment-5d8f9c7b6-x7k2q") == (
        "fraud",
        "candidate",
        "2",
    )
    assert backend.arm_of_pod("fraud", "fraud-predictor-00001-deployment-7c9d8b5f4-abcde") == (
        "fraud",
        "champion",
        "1",
    )
    backend.promote("fraud")
    assert backend.arm_of_pod("fraud", "fraud-predictor-00002-deployment-5d8f9c7b6-x7k2q") == (
        "fraud",
        "champion",
        "2",
    )
