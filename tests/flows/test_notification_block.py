"""Release notifications through a real Prefect notification block, saved on the test harness.

Blocks point at a local HTTP server thread (no network): a ``CustomWebhookNotificationBlock`` posting
JSON, and a ``SlackWebhook`` whose URL is Apprise's ``json://`` scheme (a non-Slack URL goes to Apprise
as is). Each test saves its blocks under names of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from http_inbox import Inbox, closed_port
from prefect import flow
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook
from prefect.blocks.system import Secret
from pydantic import Field

import flows.canary as canary
from mlcanary.notify.apprise import AppriseNotifier
from mlcanary.notify.fan_out import FanOutNotifier
from mlcanary.rollout.ports import Notifier, NullNotifier
from mlcanary.rollout.state import Phase, ReleaseState
from tasks.notifications import PrefectBlockNotifier, block_notifier_from_env, flow_notifier

pytestmark = pytest.mark.flows

TOKEN = "s3cr3tBLOCKtoken"
LINK = "http://mlflow.example:5000/#/runs/abc123"
# Each block gets a new name; saves still overwrite, because a save that Prefect's client retried
# (the harness's SQLite locked under load) would otherwise find its own first attempt: 409.
_names = itertools.count(1)


# -- a local inbox ----------------------------------------------------------------------------------


# -- blocks and releases ------------------------------------------------------------------------------


def _webhook(url: str) -> str:
    """Save a custom-webhook block posting JSON to ``url`` (its token kept in the block's secrets)."""
    name = f"mlcanary-test-{next(_names)}"
    CustomWebhookNotificationBlock(
        name="mlcanary",
        url=url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        secrets={"token": TOKEN},
        timeout=3,
    ).save(name, overwrite=True)
    return f"custom-webhook/{name}"


def _slack(url: str) -> str:
    name = f"mlcanary-test-{next(_names)}"
    SlackWebhook(url=url).save(name, overwrite=True)
    return f"slack-webhook/{name}"


def _release(**changes: Any) -> ReleaseState:
    now = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    values: dict[str, Any] = {
        "model": "fraud",
        "candidate_version": "7",
        "champion_version": "6",
        "phase": Phase.ROLLED_BACK,
        "step_index": 1,
        "traffic": 0,
        "started_at": now,
        "step_started_at": now,
        "release_run_id": "abc123",
        "reason": "5xx rate of the candidate above the champion's",
    }
    values.update(changes)
    return ReleaseState(**values)


def _link(release: ReleaseState) -> str | None:
    return f"http://mlflow.example:5000/#/runs/{release.release_run_id}"


def _assert_release_message(subject: str, body: str) -> None:
    assert subject == "[mlcanary] fraud v7: rolled back"
    assert "Model: fraud" in body
    assert "Candidate: v7  Champion: v6" in body
    assert "Reason: 5xx rate of the candidate above the champion's" in body
    assert f"Evidence: {LINK}" in body


# -- delivery -------------------------------------------------------------------------------------------


def test_a_release_event_arrives_once_through_a_saved_block(
    inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    slug = _webhook(f"http://{inbox.base}/hook/{{{{token}}}}")
    notifier = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug}, evidence_link=_link)
    assert isinstance(notifier, PrefectBlockNotifier)
    port: Notifier = notifier
    caplog.set_level(logging.DEBUG, logger="tasks")

    port.notify(_release(), "rolled back", "fraud v7 rolled back")

    assert len(inbox.received) == 1
    path, sent = inbox.received[0].path, inbox.received[0].body
    assert path == f"/hook/{TOKEN}"  # the block filled its secret in
    _assert_release_message(sent["subject"], sent["body"])
    assert sent["body"].startswith("fraud v7 rolled back\n")
    assert (notifier.sent, notifier.failures, notifier.skipped) == (1, 0, 0)
    assert TOKEN not in repr(notifier)
    assert slug in repr(notifier)
    assert TOKEN not in caplog.text


def test_an_apprise_based_block_gets_the_event_type(inbox: Inbox) -> None:
    slug = _slack(f"json://bot:{TOKEN}@{inbox.base}/slack")
    notifier = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug}, evidence_link=_link)
    assert notifier is not None

    notifier.notify(_release(), "rolled back", "fraud v7 rolled back")
    notifier.notify(_release(phase=Phase.PROMOTED, traffic=100), "promoted", "fraud v7 is @champion")

    messages = inbox.at("/slack")
    assert len(messages) == 2
    _assert_release_message(messages[0]["title"], messages[0]["message"])
    assert [m["type"] for m in messages] == ["warning", "success"]
    assert notifier.block.notify_type == "info"  # the loaded block itself is left as saved
    assert notifier.sent == 2


def test_unselected_events_are_not_sent(inbox: Inbox) -> None:
    slug = _webhook(f"http://{inbox.base}/hook")
    default = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug})
    assert default is not None
    default.notify(_release(phase=Phase.PROGRESSING, traffic=10), "canary started", "fraud v7 at 10 %")
    assert inbox.received == []
    assert (default.skipped, default.sent) == (1, 0)

    only_failed = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug, "MLCANARY_NOTIFY_EVENTS": "failed"})
    assert only_failed is not None
    only_failed.notify(_release(), "rolled back", "m")
    only_failed.notify(_release(phase=Phase.PROGRESSING), "failed", "tick of fraud failed")
    assert [body["subject"] for body in inbox.messages] == ["[mlcanary] fraud v7: failed"]
    assert (only_failed.skipped, only_failed.sent) == (1, 1)


@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_an_unreachable_destination_is_a_counted_failure_not_an_exception(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    if kind == "webhook":
        slug = _webhook(f"http://127.0.0.1:{port}/hook/{{{{token}}}}")
    else:
        slug = _slack(f"json://bot:{TOKEN}@127.0.0.1:{port}/slack")
    notifier = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug})
    assert notifier is not None
    caplog.set_level(logging.DEBUG, logger="tasks")

    notifier.notify(_release(), "rolled back", "m")

    assert (notifier.sent, notifier.failures) == (0, 1)
    ours = [r for r in caplog.records if r.name == "tasks.notifications"]
    assert len(ours) == 1
    assert ours[0].levelno == logging.WARNING
    assert slug in ours[0].getMessage()
    assert TOKEN not in caplog.text


def test_an_http_error_status_is_a_failure(inbox: Inbox) -> None:
    notifier = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": _webhook(f"http://{inbox.base}/fail")})
    assert notifier is not None
    notifier.notify(_release(), "rolled back", "m")
    assert len(inbox.received) == 1
    assert (notifier.sent, notifier.failures) == (0, 1)


# -- sync and async contexts -------------------------------------------------------------------------


def test_sent_from_sync_code_in_every_context(inbox: Inbox) -> None:
    notifier = block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": _slack(f"json://{inbox.base}/slack")})
    assert notifier is not None

    @flow
    def sync_flow() -> None:
        notifier.notify(_release(), "rolled back", "from a sync flow")

    @flow
    async def async_flow() -> None:
        # Here Prefect's notify would hand back a coroutine unless told to run synchronously.
        notifier.notify(_release(), "rolled back", "from an async flow")

    async def plain_coroutine() -> None:  # no run, but an event loop running in this thread
        notifier.notify(_release(), "rolled back", "from an event loop")

    notifier.notify(_release(), "rolled back", "from plain code")
    sync_flow()
    asyncio.run(async_flow())
    asyncio.run(plain_coroutine())

    bodies = [m["message"].splitlines()[0] for m in inbox.at("/slack")]
    assert bodies == ["from plain code", "from a sync flow", "from an async flow", "from an event loop"]
    assert (notifier.sent, notifier.failures) == (4, 0)


class _AsyncOnlyBlock(NotificationBlock):
    """A block whose ``notify`` is a bare coroutine function (no sync/async dispatch)."""

    _block_type_slug = "mlcanary-test-async-only"
    sent: list[str] = Field(default_factory=list)

    async def notify(self, body: str, subject: str | None = None) -> None:
        await asyncio.sleep(0)
        self.sent.append(subject or "")


def test_a_block_with_a_bare_async_notify_is_awaited() -> None:
    block = _AsyncOnlyBlock()
    notifier = PrefectBlockNotifier(block, slug="mlcanary-test-async-only/x")
    notifier.notify(_release(), "rolled back", "m")
    assert block.sent == ["[mlcanary] fraud v7: rolled back"]
    assert (notifier.sent, notifier.failures) == (1, 0)


# -- loading the block ------------------------------------------------------------------------------


def test_unset_or_blank_means_no_block_notifier() -> None:
    assert block_notifier_from_env({}) is None
    assert block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": "  "}) is None


@pytest.mark.parametrize("slug", ["release-alerts", "slack-webhook/", "Slack-Webhook/alerts", "a/b/c"])
def test_a_malformed_slug_is_a_clear_error(slug: str) -> None:
    with pytest.raises(ValueError, match=r"MLCANARY_NOTIFY_BLOCK=.*is not a block slug.*<block-type-slug>"):
        block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug})


def test_a_missing_block_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"MLCANARY_NOTIFY_BLOCK: no block 'custom-webhook/never-saved' is saved"
    ):
        block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": "custom-webhook/never-saved"})


def test_a_block_that_is_not_a_notification_block_is_a_clear_error() -> None:
    name = f"mlcanary-test-{next(_names)}"
    Secret(value=TOKEN).save(name, overwrite=True)
    with pytest.raises(
        ValueError, match=r"MLCANARY_NOTIFY_BLOCK: .* is a Secret, not a notification block"
    ) as e:
        block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": f"secret/{name}"})
    assert TOKEN not in str(e.value)


def test_unknown_events_name_the_variable(inbox: Inbox) -> None:
    slug = _webhook(f"http://{inbox.base}/hook")
    with pytest.raises(ValueError, match="MLCANARY_NOTIFY_EVENTS"):
        block_notifier_from_env({"MLCANARY_NOTIFY_BLOCK": slug, "MLCANARY_NOTIFY_EVENTS": "rollback"})


# -- the notifier of the flows ----------------------------------------------------------------------


def test_flow_notifier_fans_out_to_apprise_and_the_block(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> None:
    settings = make_settings(**{"mlflow.tracking_uri": "http://mlflow.example:5000"})
    monkeypatch.setenv("MLCANARY_NOTIFY_URLS", f"json://{inbox.base}/apprise")
    monkeypatch.setenv("MLCANARY_NOTIFY_BLOCK", _webhook(f"http://{inbox.base}/hook"))
    monkeypatch.delenv("MLCANARY_NOTIFY_EVENTS", raising=False)

    notifier = flow_notifier(settings)

    assert isinstance(notifier, FanOutNotifier)
    assert [type(n) for n in notifier.notifiers] == [AppriseNotifier, PrefectBlockNotifier]
    notifier.notify(_release(), "rolled back", "fraud v7 rolled back")
    (by_apprise,) = inbox.at("/apprise")
    (by_block,) = inbox.at("/hook")
    _assert_release_message(by_apprise["title"], by_apprise["message"])
    _assert_release_message(by_block["subject"], by_block["body"])
    assert by_apprise["message"] == by_block["body"]


def test_flow_notifier_with_one_channel_or_none(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> None:
    settings = make_settings()
    for name in ("MLCANARY_NOTIFY_URLS", "MLCANARY_NOTIFY_BLOCK", "MLCANARY_NOTIFY_EVENTS"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(flow_notifier(settings), NullNotifier)

    monkeypatch.setenv("MLCANARY_NOTIFY_BLOCK", _webhook(f"http://{inbox.base}/hook"))
    assert isinstance(flow_notifier(settings), PrefectBlockNotifier)

    monkeypatch.setenv("MLCANARY_NOTIFY_BLOCK", "custom-webhook/never-saved")
    with pytest.raises(ValueError, match="MLCANARY_NOTIFY_BLOCK"):
        flow_notifier(settings)


def test_the_flows_engine_gets_the_flow_notifier(monkeypatch: pytest.MonkeyPatch, make_settings: Any) -> None:
    settings = make_settings()
    chosen = NullNotifier()
    seen: dict[str, Any] = {}
    monkeypatch.setattr(canary, "flow_notifier", lambda s: chosen if s is settings else None)
    monkeypatch.setattr(canary, "build_engine", lambda s, **kwargs: seen.update(settings=s, **kwargs))

    canary.engine_for(settings)

    # The lease names the run to one that yields (outside a flow run: "Prefect flow").
    assert seen == {"settings": settings, "notifier": chosen, "runner": "Prefect flow"}
