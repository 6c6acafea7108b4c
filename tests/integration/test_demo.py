"""`mlcanary demo` end to end, as `make demo` runs it but captured (not a terminal) and on free ports:
v2 is promoted, v3 is rolled back, the HTML report is written, stderr stays empty, the story fits
100 columns, nothing is left running, and no secret of the environment (webhook secret, a
notification URL's token, a database password) appears in anything the run left or printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from http_inbox import running_inbox

from mlcanary.config import Settings, load_settings
from mlcanary.registry.mlflow_registry import registry_from_settings
from mlcanary.rollout.arms import CHAMPION
from mlcanary.serving.local.stack import stack_status
from mlcanary.testing.ports import free_port_env
from mlcanary.views.console import CAPTURED_WIDTH

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Distinctive values the run must never write anywhere (issue 14, item 10).
WEBHOOK_SECRET = "whsec-Zq8vRk2LmT4nXy7Pa1Bc"
NOTIFY_TOKEN = "ntok-Hj5sWd9QeUr3Vb6Kf0Gm"
DB_PASSWORD = "dbpw-Lt7Nc2YxMa8Rp4Se1Dq"
SECRETS = (WEBHOOK_SECRET, NOTIFY_TOKEN, DB_PASSWORD)
NOTIFIED: list[dict[str, object]] = []  # what the demo's notifier delivered to the inbox


def _secret_env(notify_base: str) -> dict[str, str]:
    """The secrets as a deployment sets them: the webhook secret, a notification URL carrying a
    token (to a local inbox: the demo's notifications are really sent), a database password."""
    return {
        "MLCANARY_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MLCANARY_NOTIFY_URLS": f"json://{notify_base}/hooks/{NOTIFY_TOKEN}",
        "PGPASSWORD": DB_PASSWORD,
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Settings]:
    state = tmp_path_factory.mktemp("demo") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCANARY_", "MLFLOW_", "COLUMNS"))}
    with running_inbox() as inbox:
        env |= free_port_env() | {"MLCANARY_STATE_DIR": str(state)} | _secret_env(inbox.base)
        result = subprocess.run(
            [sys.executable, "-m", "mlcanary.cli", "demo"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
        NOTIFIED.extend(inbox.messages)
    return result, load_settings("demo", env=env)


@pytest.mark.timeout(900)
def test_the_story_ends_with_v2_promoted_and_v3_rolled_back(
    demo: tuple[subprocess.CompletedProcess[str], Settings],
) -> None:
    result, settings = demo
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    outcome = next(line for line in result.stdout.splitlines() if line.startswith("│ outcome"))
    assert [cell.strip() for cell in outcome.split("│")[1:-1]] == ["outcome", "promoted", "rolled_back"], (
        result.stdout[-6000:]  # the story, with every check of the last tick, says why
    )
    assert "Shadow phase: mirrored requests" in (settings.state_dir / "report.html").read_text()
    registry = registry_from_settings(settings)
    name = settings.model.name
    assert registry.aliases(name) == {CHAMPION: "2"}
    assert registry.get_version(name, "3").tag("rejected")
    rejected = registry.get_version(name, "3").tag("rejected") or ""
    assert "critical check failed" in rejected
    # The demo profile's shadow phase rejects the bad candidate before any user is served by it.
    assert "rejected in shadow, no user served" in rejected


@pytest.mark.timeout(900)
def test_the_html_report_is_written(demo: tuple[subprocess.CompletedProcess[str], Settings]) -> None:
    result, settings = demo
    report = settings.state_dir / "report.html"
    assert f"HTML report: {report.resolve()}" in result.stdout
    html = report.read_text(encoding="utf-8")
    assert "<title>mlcanary demo</title>" in html
    for release in ("v2 logistic regression", "v3 flaky feature service"):
        assert release in html
    assert report.stat().st_size > 1_000_000  # plotly.js is inlined: the report opens offline


@pytest.mark.timeout(900)
def test_nothing_but_the_story_and_it_fits_the_width(
    demo: tuple[subprocess.CompletedProcess[str], Settings],
) -> None:
    result, _ = demo
    assert result.stderr == ""
    assert "Traceback" not in result.stdout
    assert "Task was destroyed" not in result.stdout
    assert " INFO " not in result.stdout
    for step in (
        "1 · the champion",
        "2 · a better model",
        "3 · a bad candidate in shadow",
        "4 · the evidence",
    ):
        assert step in result.stdout
    widths = [len(line) for line in result.stdout.splitlines()]
    assert max(widths) <= CAPTURED_WIDTH
    assert "…" not in result.stdout  # no table cell was cut to fit


@pytest.mark.timeout(900)
def test_the_stack_is_down_afterwards(demo: tuple[subprocess.CompletedProcess[str], Settings]) -> None:
    _, settings = demo
    assert not stack_status(settings).running


@pytest.mark.timeout(900)
def test_no_secret_appears_in_anything_the_run_left_or_printed(
    demo: tuple[subprocess.CompletedProcess[str], Settings],
) -> None:
    result, settings = demo
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCANARY_", "MLFLOW_", "COLUMNS"))}
    env |= {"MLCANARY_STATE_DIR": str(settings.state_dir)} | _secret_env("127.0.0.1:9")
    status = subprocess.run(
        [sys.executable, "-m", "mlcanary.cli", "--profile", "demo", "status", "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    captured = {"demo stdout": result.stdout, "demo stderr": result.stderr, "status --json": status.stdout}
    captured["status stderr"] = status.stderr
    scanned = 0
    for path in sorted(settings.state_dir.rglob("*")):
        if path.is_file():  # logs, the MLflow and inference-log databases, artifacts, the report
            captured[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
            scanned += 1
    assert scanned > 20, "the state directory holds the run's logs, databases and artifacts"
    assert NOTIFIED, "the notification URL with the token was used (its messages reached the inbox)"
    assert any(p.endswith(".log") for p in captured), "the run's logs were scanned"
    leaks = [(where, secret) for where, text in captured.items() for secret in SECRETS if secret in text]
    assert not leaks, leaks
