"""The one rendering of a decision's checks, for a terminal, an HTML page and Markdown.

:func:`check_rows` turns each :class:`~mlcanary.rollout.state.CheckResult` into the text of its
cells once (numbers to four significant digits, sample sizes with thousands separators, "—" for
what is unknown); :func:`terminal_table` (the CLI's ``step``, the demo's live view),
:func:`html_table` (the HTML report) and :func:`markdown_table` (the Prefect artifact of each
tick) lay those rows out. Verdict colours are defined here too, once per medium.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rich.table import Table
from rich.text import Text

from mlcanary.rollout.state import CheckResult

DASH: Final = "—"
COLUMNS: Final = (
    "check",
    "verdict",
    "champion",
    "candidate",
    "requirement",
    "test",
    "n (champion / candidate)",
)

VERDICT_STYLES: Final = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "magenta"}
"""Rich styles of the verdicts."""
VERDICT_COLOURS: Final = {"pass": "#2ca02c", "fail": "#d62728", "inconclusive": "#e6a700", "error": "#b0179b"}
"""HTML colours of the verdicts."""


def number(value: float | None) -> str:
    """A measured value as shown in every table: four significant digits, "—" when unknown."""
    return DASH if value is None else f"{value:.4g}"


def _count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


@dataclass(frozen=True)
class CheckRow:
    """The cells of one check, as text. ``flag`` is "critical", "advisory" or ""; ``interval`` is
    the confidence sequence of the candidate − champion difference ("" without one)."""

    check: str
    flag: str
    verdict: str
    champion: str
    candidate: str
    interval: str
    requirement: str
    test: str
    n: str
    detail: str

    @property
    def labelled_check(self) -> str:
        """The check's name with its flag, e.g. ``error_rate (critical)``."""
        return f"{self.check} ({self.flag})" if self.flag else self.check


def check_rows(checks: Sequence[CheckResult]) -> list[CheckRow]:
    """One :class:`CheckRow` per check, in order."""
    rows = []
    for check in checks:
        flag = "critical" if check.critical else "advisory" if check.advisory else ""
        interval = (
            f"[{number(check.ci_low)}, {number(check.ci_high)}]"
            if check.ci_low is not None and check.ci_high is not None
            else ""
        )
        rows.append(
            CheckRow(
                check=check.name,
                flag=flag,
                verdict=check.verdict,
                champion=number(check.baseline),
                candidate=number(check.value),
                interval=interval,
                requirement=check.threshold or DASH,
                test=check.test or DASH,
                n=f"{_count(check.n_champion)} / {_count(check.n_candidate)}",
                detail=check.detail,
            )
        )
    return rows


TERMINAL_MARKERS: Final = {"critical": " ⚑", "advisory": " ·", "": ""}
TERMINAL_LEGEND: Final = "⚑ critical: a failure rolls back  · advisory: never blocks"


#: How much of an errored check's reason the terminal table prints under it.
ERROR_NOTE_CHARS: Final = 160


def _error_notes(checks: Sequence[CheckResult]) -> list[str]:
    """One line per check that could not be evaluated, saying why (its reason, else its detail)."""
    notes = []
    for check in checks:
        why = " ".join((check.reason or check.detail).split())
        if check.verdict == "error" and why:
            if len(why) > ERROR_NOTE_CHARS:
                why = why[: ERROR_NOTE_CHARS - 1] + "…"
            notes.append(f"{check.name}: error — {why}")
    return notes


def terminal_table(checks: Sequence[CheckResult], *, compact: bool = False) -> Table:
    """A rich table of the checks that fits 100 columns: check (⚑ critical, · advisory), verdict,
    champion, candidate, n and, unless ``compact`` (the demo's live view), the requirement, wrapped.
    Under the legend, one line per check in ``error`` says why it could not be evaluated. The
    statistical test's description is left to the JSON, HTML and Markdown forms."""
    # Text, not a markup string: a reason may quote brackets.
    caption = Text("\n".join([TERMINAL_LEGEND, *_error_notes(checks)]))
    table = Table(show_edge=False, pad_edge=False, expand=True, caption=caption, caption_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("champion", no_wrap=True, justify="right")
    table.add_column("candidate", no_wrap=True, justify="right")
    table.add_column("n (champion / candidate)" if compact else "n", no_wrap=True, justify="right")
    if not compact:
        table.add_column("requirement", ratio=1)
    for row in check_rows(checks):
        style = VERDICT_STYLES.get(row.verdict, "white")
        cells = [
            row.check + TERMINAL_MARKERS[row.flag],
            f"[{style}]{row.verdict}[/{style}]",
            row.champion,
            row.candidate,
            row.n,
        ]
        table.add_row(*cells, *([] if compact else [row.requirement]))
    return table


def html_table(checks: Sequence[CheckResult], caption: str = "") -> str:
    """A ``<table class="checks">`` of the checks (every text escaped), the detail as a tooltip."""
    if not checks:
        return '<p class="note">No checks were evaluated.</p>'
    esc = _escape
    head = "".join(f"<th>{esc(name)}</th>" for name in COLUMNS)
    body = []
    for row in check_rows(checks):
        colour = VERDICT_COLOURS.get(row.verdict, "#555")
        candidate = esc(row.candidate)
        if row.interval:
            candidate += f' <span class="ci">{esc(row.interval)}</span>'
        detail = f' title="{esc(row.detail)}"' if row.detail else ""
        flag = f" ({row.flag})" if row.flag else ""
        cells = [
            f'<td{detail}>{esc(row.check)}<span class="flag">{esc(flag)}</span></td>',
            f'<td><span class="verdict" style="background:{colour}">{esc(row.verdict)}</span></td>',
            f'<td class="num">{esc(row.champion)}</td>',
            f'<td class="num">{candidate}</td>',
            f"<td>{esc(row.requirement)}</td>",
            f"<td>{esc(row.test)}</td>",
            f'<td class="num">{esc(row.n)}</td>',
        ]
        body.append(f'<tr class="verdict-{esc(row.verdict)}">{"".join(cells)}</tr>')
    caption_html = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<table class="checks">{caption_html}'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def markdown_table(checks: Sequence[CheckResult]) -> str:
    """A Markdown table of the checks (``|`` in any text escaped)."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in check_rows(checks):
        candidate = f"{row.candidate} {row.interval}".strip()
        cells = (
            row.labelled_check,
            f"**{row.verdict}**",
            row.champion,
            candidate,
            row.requirement,
            row.test,
            row.n,
        )
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def shadow_line(checks: Sequence[CheckResult]) -> str | None:
    """One line on a shadow-phase decision (None for a canary decision): mirrored requests, pairs
    and their agreement, read from its checks."""
    by_name = {c.name: c for c in checks}
    if "probability_shift" not in by_name:
        return None
    errors, agreement = by_name.get("error_rate"), by_name.get("agreement")
    live = errors.n_champion if errors else None
    mirrored = errors.n_candidate if errors else None
    pairs = agreement.n_candidate if agreement else None
    agree = f", {agreement.value:.1%} same label" if agreement and agreement.value is not None else ""
    return (
        f"shadow: no user on the candidate; {mirrored if mirrored is not None else '?'} mirrored requests "
        f"answered of {live if live is not None else '?'} live, {pairs or 0} paired{agree}"
    )
