"""Apprise notifications: one message per selected event, never an exception, never a secret in a log.

Messages go to Apprise's ``json://`` scheme against a local HTTP server thread (no network). Also the
shared message formatter and the fan-out over several channels.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from http_inbox import Inbox, closed_port

from mlcanary.notify.apprise import AppriseNotifier, notifier_from_env
from mlcanary.notify.events import DEFAULT_EVENTS, EVENTS, NOTIFY_TYPES, parse_events
from mlcanary.notify.fan_out import FanOutNotifier
from mlcanary.notify.message import format_message, mlflow_run_link, redact_url
from mlcanary.rollout.ports import Notifier, NullNotifier, ReleaseEvent
from mlcanary.rollout.state import Phase, ReleaseState

TOKEN = "s3cr3tTOKENxyz"


def _url(server: Inbox) -> str:
    return f"json://bot:{TOKEN}@127.0.0.1:{server.server_address[1]}/hook"


def _release(**changes: Any) -> ReleaseState:
    now = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    values: dict[str, Any] = {
        "model": "churn",
        "candidate_version": "7",
        "champion_version": "6",
        "phase": Phase.PROMOTED,
        "step_index": 1,
        "traffic": 100,
        "started_at": now,
        "step_started_at": now,
        "release_run_id": "abc123",
        "reason": "all checks passed after 24 h",
    }
    values.update(changes)
    return ReleaseState(**values)


def _link(release: ReleaseState) -> str | None:
    return mlflow_run_link("http://mlflow.example:5000", release.release_run_id, "12")


# -- delivery -----------------------------------------------------------------------------------


def test_one_message_per_event_with_reason_versions_phase_and_link(inbox: Inbox) -> None:
    notifier = AppriseNotifier([_url(inbox)], evidence_link=_link, timeout_s=5)
    port: Notifier = notifier  # satisfies the engine's protocol (checked by mypy)
    assert port is notifier

    notifier.notify(_release(), "promoted", "churn v7 is @champion: all checks passed after 24 h")

    assert len(inbox.messages) == 1
    sent = inbox.messages[0]
    assert sent["title"] == "[mlcanary] churn v7: promoted"
    body = sent["message"]
    assert "Reason: all checks passed after 24 h" in body
    assert "Candidate: v7  Champion: v6" in body
    assert "Phase: promoted" in body
    assert "Evidence: http://mlflow.example:5000/#/experiments/12/runs/abc123" in body
    assert sent["type"] == "success"
    assert (notifier.sent, notifier.failures) == (1, 0)


def test_each_event_sends_its_own_message(inbox: Inbox) -> None:
    notifier = AppriseNotifier([_url(inbox)], timeout_s=5)

    notifier.notify(_release(), "promoted", "m1")
    notifier.notify(_release(phase=Phase.ROLLED_BACK, reason="5xx burst", traffic=0), "rolled back", "m2")

    assert [m["title"] for m in inbox.messages] == [
        "[mlcanary] churn v7: promoted",
        "[mlcanary] churn v7: rolled back",
    ]
    assert "Reason: 5xx burst" in inbox.messages[1]["message"]
    assert inbox.messages[1]["type"] == "warning"
    # Without a link builder the run id still points at the evidence.
    assert "Evidence: MLflow run abc123" in inbox.messages[0]["message"]
    assert notifier.sent == 2


def test_several_destinations_each_get_the_message(inbox: Inbox) -> None:
    notifier = AppriseNotifier([_url(inbox), _url(inbox).replace("/hook", "/other")], timeout_s=5)
    notifier.notify(_release(), "promoted", "m")
    assert len(inbox.messages) == 2
    assert notifier.sent == 1


def test_a_failing_link_builder_does_not_cost_the_message(inbox: Inbox) -> None:
    def broken(release: ReleaseState) -> str | None:
        raise RuntimeError("boom")

    notifier = AppriseNotifier([_url(inbox)], evidence_link=broken, timeout_s=5)
    notifier.notify(_release(), "promoted", "m")
    assert len(inbox.messages) == 1
    assert notifier.failures == 0


# -- failure never fails the rollout, and never leaks the URL -----------------------------------------


def test_unreachable_endpoint_counts_a_failure_without_raising_or_leaking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"json://bot:{TOKEN}@127.0.0.1:{closed_port()}/{TOKEN}path"
    notifier = AppriseNotifier([url], timeout_s=2)
    caplog.set_level(logging.DEBUG, logger="mlcanary")
    caplog.set_level(logging.WARNING, logger="apprise")

    notifier.notify(_release(phase=Phase.ROLLED_BACK), "rolled back", "m")

    assert notifier.failures == 1
    assert notifier.sent == 0
    ours = [r for r in caplog.records if r.name == "mlcanary.notify.apprise"]
    assert len(ours) == 1
    assert ours[0].levelno == logging.WARNING
    assert "json://" in ours[0].getMessage()
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(notifier)


def test_an_exception_inside_apprise_is_caught_and_counted(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = AppriseNotifier([_url(inbox)], timeout_s=5)

    def explode(**_: Any) -> None:
        raise RuntimeError(f"cannot reach {_url(inbox)}")

    monkeypatch.setattr(notifier._apprise, "notify", explode)
    with caplog.at_level(logging.WARNING, logger="mlcanary"):
        notifier.notify(_release(), "promoted", "m")
    assert notifier.failures == 1
    assert TOKEN not in caplog.text
    assert "RuntimeError" in caplog.text


# -- which events ---------------------------------------------------------------------------------


def test_default_events_skip_canary_started(inbox: Inbox) -> None:
    notifier = AppriseNotifier([_url(inbox)], timeout_s=5)
    notifier.notify(_release(phase=Phase.PROGRESSING, traffic=20), "canary started", "churn v7 at 20 %")
    assert inbox.messages == []
    assert (notifier.skipped, notifier.sent, notifier.failures) == (1, 0, 0)
    notifier.notify(_release(phase=Phase.FAILED), "failed", "needs a human")
    assert [m["type"] for m in inbox.messages] == ["failure"]


def test_canary_started_is_opt_in(inbox: Inbox) -> None:
    notifier = AppriseNotifier([_url(inbox)], timeout_s=5, events=["canary started"])
    notifier.notify(_release(phase=Phase.PROGRESSING, traffic=20), "canary started", "churn v7 at 20 %")
    notifier.notify(_release(), "promoted", "m")
    assert [m["title"] for m in inbox.messages] == ["[mlcanary] churn v7: canary started"]
    assert "churn v7 at 20 %" in inbox.messages[0]["message"]


def test_approval_requested_is_sent_by_default(inbox: Inbox) -> None:
    notifier = AppriseNotifier([_url(inbox)], timeout_s=5)
    waiting = _release(
        phase=Phase.PROGRESSING, traffic=50, reason="all checks passed; promotion needs approval"
    )
    notifier.notify(waiting, "approval requested", "churn v7 waits for a human to approve the promotion")
    assert [m["title"] for m in inbox.messages] == ["[mlcanary] churn v7: approval requested"]
    assert "Reason: all checks passed; promotion needs approval" in inbox.messages[0]["message"]
    assert inbox.messages[0]["type"] == "info"
    assert (notifier.sent, notifier.skipped) == (1, 0)


def test_parse_events() -> None:
    assert parse_events(None) == DEFAULT_EVENTS == {"promoted", "rolled back", "failed", "approval requested"}
    assert parse_events("Approval_Requested") == {ReleaseEvent.APPROVAL_REQUESTED}
    assert parse_events("all") == EVENTS
    assert parse_events("Promoted, rolled_back") == {"promoted", "rolled back"}
    assert parse_events("") == frozenset()
    with pytest.raises(ValueError, match="unknown notification event"):
        parse_events("promote")


def test_every_release_event_is_known_and_typed() -> None:
    assert set(ReleaseEvent) == EVENTS
    assert set(NOTIFY_TYPES) == EVENTS
    assert ReleaseEvent.CANARY_STARTED not in DEFAULT_EVENTS


# -- the shared formatter ---------------------------------------------------------------------------


def test_format_message_holds_model_versions_phase_reason_and_link() -> None:
    release = _release(phase=Phase.ROLLED_BACK, traffic=0, reason="5xx burst on the candidate")
    subject, body = format_message(release, "rolled back", "churn v7 rolled back", "http://ml/#/runs/abc123")
    assert subject == "[mlcanary] churn v7: rolled back"
    assert body.splitlines() == [
        "churn v7 rolled back",
        "",
        "Model: churn",
        "Candidate: v7  Champion: v6",
        "Phase: rolled_back  Candidate traffic: 0 %",
        "Reason: 5xx burst on the candidate",
        "Evidence: http://ml/#/runs/abc123",
    ]


def test_format_message_falls_back_to_the_run_id_then_to_nothing() -> None:
    _, body = format_message(_release(), "promoted", "m", None)
    assert body.splitlines()[-1] == "Evidence: MLflow run abc123"
    _, body = format_message(_release(release_run_id=None, reason=None), "promoted", "m", None)
    assert "Evidence" not in body
    assert body.splitlines()[-1] == "Reason: (none recorded)"


def test_apprise_notifier_uses_the_shared_formatter() -> None:
    notifier = AppriseNotifier(["json://127.0.0.1:9/"], evidence_link=_link)
    release = _release()
    expected = format_message(release, "promoted", "m", _link(release))
    assert notifier.format(release, "promoted", "m") == expected


# -- fan-out over several channels ----------------------------------------------------------------------


class _Recorder:
    def __init__(self, calls: list[tuple[str, str, str]], name: str) -> None:
        self.calls = calls
        self.name = name

    def notify(self, release: ReleaseState, title: str, message: str) -> None:
        self.calls.append((self.name, title, message))


class _Exploding:
    def notify(self, release: ReleaseState, title: str, message: str) -> None:
        raise RuntimeError(f"cannot reach https://hooks.example/{TOKEN}")


def test_fan_out_sends_to_every_channel_in_order() -> None:
    calls: list[tuple[str, str, str]] = []
    fan_out = FanOutNotifier([_Recorder(calls, "a"), _Recorder(calls, "b")])
    port: Notifier = fan_out
    port.notify(_release(), "promoted", "m1")
    fan_out.notify(_release(), "rolled back", "m2")
    assert calls == [
        ("a", "promoted", "m1"),
        ("b", "promoted", "m1"),
        ("a", "rolled back", "m2"),
        ("b", "rolled back", "m2"),
    ]
    assert fan_out.failures == 0


def test_fan_out_a_failing_channel_never_stops_the_others_nor_raises(
    inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, str, str]] = []
    apprise = AppriseNotifier([_url(inbox)], timeout_s=5)
    fan_out = FanOutNotifier([_Exploding(), apprise, _Exploding(), _Recorder(calls, "last")])
    with caplog.at_level(logging.WARNING, logger="mlcanary"):
        fan_out.notify(_release(), "promoted", "m")
    assert len(inbox.messages) == 1
    assert apprise.sent == 1
    assert calls == [("last", "promoted", "m")]
    assert fan_out.failures == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlcanary.notify.fan_out"]
    assert len(warnings) == 2
    assert "channel #1 (_Exploding)" in warnings[0]
    assert "RuntimeError" in warnings[0]
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(fan_out)


# -- links and redaction ----------------------------------------------------------------------------


def test_mlflow_run_link() -> None:
    assert (
        mlflow_run_link("http://127.0.0.1:5000/", "r1", "3")
        == "http://127.0.0.1:5000/#/experiments/3/runs/r1"
    )
    assert mlflow_run_link("https://mlflow.corp/ml", "r1") == "https://mlflow.corp/ml/#/runs/r1"
    assert mlflow_run_link("https://user:pw@mlflow.corp?x=1", "r1") == "https://mlflow.corp/#/runs/r1"
    assert mlflow_run_link("sqlite:////tmp/mlflow.db", "r1") is None
    assert mlflow_run_link("databricks", "r1") is None
    assert mlflow_run_link("http://127.0.0.1:5000", None) is None


def test_redact_url_keeps_the_scheme_only() -> None:
    assert redact_url(f"slack://{TOKEN}/B/C") == "slack://…"
    assert TOKEN not in redact_url(f"{TOKEN}")


# -- notifier_from_env --------------------------------------------------------------------------------


def test_from_env_without_urls_is_null() -> None:
    assert isinstance(notifier_from_env({}), NullNotifier)
    assert isinstance(notifier_from_env({"MLCANARY_NOTIFY_URLS": "  "}), NullNotifier)


def test_from_env_builds_an_apprise_notifier(inbox: Inbox) -> None:
    env = {
        "MLCANARY_NOTIFY_URLS": f"{_url(inbox)}, {_url(inbox)},",
        "MLCANARY_NOTIFY_EVENTS": "canary started,promoted",
    }
    notifier = notifier_from_env(env, timeout_s=5)
    assert isinstance(notifier, AppriseNotifier)
    assert notifier.destinations == ("json://…", "json://…")
    assert notifier.events == {"canary started", "promoted"}
    notifier.notify(_release(), "promoted", "m")
    assert len(inbox.messages) == 2


@pytest.mark.parametrize(
    ("value", "position"),
    [
        (f"json://127.0.0.1/, bogus://{TOKEN}@host/", "#2 of 2"),
        (f"not-a-url-{TOKEN}", "#1 of 1"),
        (f"json://127.0.0.1/,,slack://{TOKEN}", "#2 of 3"),
        (f"json://127.0.0.1/, slack://{TOKEN} json://x/", "#2 of 2"),
        (f"slack://{TOKEN}", "#1 of 1"),
    ],
)
def test_from_env_rejects_an_invalid_url_by_position_without_echoing_it(
    value: str, position: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="MLCANARY_NOTIFY_URLS") as raised:
        notifier_from_env({"MLCANARY_NOTIFY_URLS": value})
    message = str(raised.value)
    assert position in message
    assert TOKEN not in message
    assert TOKEN not in caplog.text


def test_from_env_rejects_unknown_events() -> None:
    env = {"MLCANARY_NOTIFY_URLS": "json://127.0.0.1/", "MLCANARY_NOTIFY_EVENTS": "promote"}
    with pytest.raises(ValueError, match="MLCANARY_NOTIFY_EVENTS"):
        notifier_from_env(env)


def test_apprise_is_imported_lazily() -> None:
    """No module-level ``import apprise`` (only inside functions or under TYPE_CHECKING)."""
    import ast
    from pathlib import Path

    import mlcanary.notify.apprise as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] == "apprise" for n in names)
