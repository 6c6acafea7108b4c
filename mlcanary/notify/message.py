"""The one message of a release event, the same on every channel, and the safe forms of what it
links to: :func:`format_message`, :func:`mlflow_run_link`, :func:`redact_url`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from mlcanary.rollout.state import ReleaseState

logger = logging.getLogger(__name__)

EvidenceLink = Callable[[ReleaseState], str | None]
"""Turns a release into the URL of its evidence (e.g. its MLflow run page)."""


def redact_url(url: str) -> str:
    """The loggable form of an Apprise URL: its scheme only (``"slack://…"``), never a token."""
    scheme, sep, _ = url.strip().partition("://")
    if not sep or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return "<unrecognised URL>"
    return f"{scheme.lower()}://…"


def mlflow_run_link(
    tracking_uri: str | None, run_id: str | None, experiment_id: str | None = None
) -> str | None:
    """The MLflow UI page of run ``run_id``, or None when there is no run or no web UI to link to.

    Only http(s) tracking URIs have a UI (a ``sqlite:`` or file store has none). Credentials,
    query and fragment of the tracking URI are dropped so the link is safe to post in a chat.
    Without ``experiment_id`` the link uses MLflow's direct run route (``#/runs/<id>``), which the
    UI redirects to the run's page in its experiment.
    """
    if not tracking_uri or not run_id:
        return None
    parts = urlsplit(tracking_uri.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    base = urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}/#/runs/{run_id}"


def evidence_link_of(release: ReleaseState, evidence_link: EvidenceLink | None) -> str | None:
    """``evidence_link(release)``, or None when there is no builder or it fails (logged as a
    warning with the exception type only: a broken link builder must not cost the notification)."""
    if evidence_link is None:
        return None
    try:
        return evidence_link(release)
    except Exception as exc:
        logger.warning("notify: could not build the evidence link (%s)", type(exc).__name__)
        return None


def format_message(release: ReleaseState, title: str, message: str, link: str | None) -> tuple[str, str]:
    """The (subject, body) of one event, the same on every channel.

    The body holds ``message``, the model, both versions, the phase, the candidate traffic, the
    reason and the evidence: ``link`` when given, else the release's MLflow run id when known.
    """
    subject = f"[mlcanary] {release.model} v{release.candidate_version}: {title}"
    lines = [
        message,
        "",
        f"Model: {release.model}",
        f"Candidate: v{release.candidate_version}  Champion: v{release.champion_version}",
        f"Phase: {release.phase.value}  Candidate traffic: {release.traffic} %",
        f"Reason: {release.reason or '(none recorded)'}",
    ]
    if link:
        lines.append(f"Evidence: {link}")
    elif release.release_run_id:
        lines.append(f"Evidence: MLflow run {release.release_run_id}")
    return subject, "\n".join(lines)
