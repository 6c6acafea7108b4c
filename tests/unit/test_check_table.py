"""The check table in its three media: every check's cells, errors explained, text escaped."""

from __future__ import annotations

import io

from rich.console import Console

from mlcanary.rollout.state import CheckResult
from mlcanary.views.check_table import html_table, markdown_table, terminal_table


def _check(name: str, verdict: str, **kwargs) -> CheckResult:
    fields = {
        "critical": False,
        "advisory": False,
        "blocking": False,
        "value": 0.25,
        "baseline": 0.5,
        "threshold": "≥ 95 %",
        "test": "paired exact",
        "n_champion": 1200,
        "n_candidate": 1200,
    }
    fields.update(kwargs)
    return CheckResult(name=name, verdict=verdict, **fields)


def _render(table) -> str:
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(table)
    return out.getvalue()


def test_the_terminal_table_says_why_a_check_is_in_error() -> None:
    checks = [
        _check("error_rate", "pass", critical=True),
        _check("agreement", "error", value=None, reason="candidate scores unreadable: [shape] (3,) != (2,)"),
        _check("drift", "inconclusive", reason="not enough rows"),
    ]
    text = _render(terminal_table(checks, compact=True))
    assert "agreement: error — candidate scores unreadable: [shape] (3,) != (2,)" in text
    assert "drift:" not in text  # only errors get a note: the other verdicts are self-explanatory
    assert "error_rate ⚑" in text
    assert "1,200 / 1,200" in text


def test_a_long_error_reason_is_cut_with_an_ellipsis_and_a_silent_one_adds_no_note() -> None:
    long_reason = "x" * 500
    text = _render(terminal_table([_check("agreement", "error", reason=long_reason)]))
    assert "…" in text
    assert "x" * 200 not in text.replace("\n", "")
    assert "agreement: error" not in _render(terminal_table([_check("agreement", "error")]))


def test_the_detail_stands_in_for_a_missing_reason() -> None:
    text = _render(terminal_table([_check("latency_p95", "error", detail="histogram empty")]))
    assert "latency_p95: error — histogram empty" in text


def test_html_and_markdown_escape_what_they_show() -> None:
    check = _check("a<b>", "fail", threshold="x | y", detail='say "hi"')
    page = html_table([check])
    assert "a&lt;b&gt;" in page
    assert "<b>" not in page
    assert 'title="say &quot;hi&quot;"' in page
    assert "x \\| y" in markdown_table([check])
    assert html_table([]) == '<p class="note">No checks were evaluated.</p>'
