"""Counting the 5xx Envoy answered for an arm whose server could not (its proxy-error log)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from mlcanary.config import Settings
from mlcanary.rollout.measurements import ProxyErrorCount
from mlcanary.serving.local.envoy_config import EnvoyLayout
from mlcanary.serving.local.proxy_errors import EnvoyProxyErrors, count_proxy_errors

T0 = datetime(2026, 12, 3, 12, tzinfo=UTC)


def _line(at: datetime, cluster: str, code: int, flags: str) -> str:
    # The fields and formats of the JSON access log Envoy writes (envoy_config._access_log_format).
    return json.dumps(
        {
            "start_time": at.strftime("%Y-%m-%dT%H:%M:%S.%f%z"),
            "upstream_cluster": cluster,
            "response_code": str(code),
            "response_flags": flags,
            "request_id": "r",
        }
    )


def test_counts_each_arms_proxy_answered_5xx_over_the_release_and_the_window(tmp_path: Path) -> None:
    log = tmp_path / "proxy-errors.log"
    lines = [
        _line(T0 - timedelta(seconds=1), "candidate", 503, "UF"),  # before the release: not counted
        _line(T0 + timedelta(seconds=1), "candidate", 503, "UF"),  # connection refused
        _line(T0 + timedelta(seconds=2), "candidate", 503, "UC"),  # connection reset
        _line(T0 + timedelta(seconds=30), "candidate", 504, "UT"),  # timed out, in the window
        _line(T0 + timedelta(seconds=31), "candidate", 503, "URX"),  # retries exhausted, in the window
        _line(T0 + timedelta(seconds=32), "champion", 503, "UF"),
        _line(T0 + timedelta(seconds=33), "candidate", 0, "DC"),  # the client hung up: not the arm's error
        _line(T0 + timedelta(seconds=34), "candidate", 500, "-"),  # the server answered: it logged that
        _line(T0 + timedelta(seconds=35), "", 404, "NR"),  # no route: no arm
        _line(T0 + timedelta(seconds=36), "other", 503, "UF"),  # not an arm's cluster
        _line(T0 + timedelta(seconds=99), "candidate", 503, "UF"),  # after now: not counted
        '{"start_time": "2026-12-03T12:00:40.000000+0000", "upstream_cl',  # a line still being written
    ]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    counts = count_proxy_errors(
        log, start=T0, window_start=T0 + timedelta(seconds=30), now=T0 + timedelta(seconds=60)
    )

    assert counts == {"champion": ProxyErrorCount(1, 1), "candidate": ProxyErrorCount(4, 2)}


def test_times_in_another_offset_and_naive_bounds_compare_as_instants(tmp_path: Path) -> None:
    log = tmp_path / "proxy-errors.log"
    local = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=5)
    log.write_text(_line(local, "candidate", 503, "UF") + "\n", encoding="utf-8")
    naive = T0.replace(tzinfo=None)
    counts = count_proxy_errors(log, start=naive, window_start=naive, now=naive + timedelta(seconds=10))
    assert counts["candidate"] == ProxyErrorCount(1, 1)


def test_no_log_yet_means_no_proxy_errors(tmp_path: Path) -> None:
    counts = count_proxy_errors(tmp_path / "absent.log", start=T0, window_start=T0, now=T0)
    assert counts == {"champion": ProxyErrorCount(0, 0), "candidate": ProxyErrorCount(0, 0)}


def test_the_local_stack_reads_the_log_envoy_is_configured_to_write(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert (
        EnvoyProxyErrors.from_settings(settings).path
        == EnvoyLayout.from_settings(settings).proxy_errors_log_path
    )
