"""The demo's self-contained HTML report: what happened to each release, with plots.

:func:`write_report` turns a list of :class:`ReleaseRecord` (a release's final state plus the
``(Measurements, Decision)`` of every tick, in order) into ONE HTML file that opens offline: the
plotly.js bundle is inlined once (the first figure carries it, the others reuse it) and nothing is
loaded from the network. Per release it shows a header with the outcome, then

1. **latency per arm over time** — from the inference log when a store is given (a scatter of
   requests, 5xx marked, plus P50/P95 per time bucket), otherwise the tick-by-tick cumulative
   percentiles from the measurements;
2. **prediction distributions** — normalized histograms of the logged ``probability`` per arm
   (overlaid); without a store or probabilities, the positive rate per arm per tick;
3. **decisions over time** — the candidate's traffic share as a step line, one marker per tick
   coloured by action with the reason on hover, and the cumulative 5xx rate per arm per tick;
4. **the final tick's checks side by side** — champion, candidate, requirement, test, sample sizes,
   verdicts in colour;
5. for a release with a **shadow phase**: paired agreement per tick and a scatter of the candidate's
   probability against the champion's on the same mirrored requests
   (:mod:`mlcanary.demo.shadow_figures`);

and a summary table across releases at the top (:func:`summary_rows`, shared with the terminal
summary). Times on the x-axes are relative to the release start. All text placed in the HTML is
escaped with :func:`html.escape` (hover text too, which plotly would otherwise render as markup).

Size: the plotly.js bundle is about 4.6 MB; the data stays small because scatter points are
downsampled to ``max_points_per_arm`` per arm and release (seeded, so reports are reproducible),
histograms are binned in Python, and numbers are rounded. A two-release demo report is about 4.8 MB.

Importing this module has no side effects; plotly, numpy and pandas are imported inside functions.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlcanary.demo.figures import (
    FigureWriter,
    TimeAxis,
    decisions_figure,
    latency_from_log,
    latency_from_ticks,
    positive_rate_from_ticks,
    probability_histogram,
    span_s,
)
from mlcanary.demo.shadow_figures import agreement_figure, has_shadow, paired_scatter
from mlcanary.demo.summary import (
    SUMMARY_COLUMNS,
    ReleaseRecord,
    duration_s,
    final_reason,
    format_summary_value,
    last_tick,
    summary_rows,
)
from mlcanary.rollout.arms import ARMS
from mlcanary.rollout.durations import human_duration
from mlcanary.views.check_table import html_table

if TYPE_CHECKING:
    import pandas as pd

    from mlcanary.telemetry.store import InferenceLogStore

DEFAULT_MAX_POINTS_PER_ARM = 4000
PHASE_COLOURS: dict[str, str] = {
    "promoted": "#2ca02c",
    "promoting": "#2ca02c",
    "rolled_back": "#d62728",
    "rolling_back": "#d62728",
    "failed": "#b0179b",
}

#: Keys of :func:`summary_rows`, in display order, with their column headings.


def write_report(
    path: Path,
    records: list[ReleaseRecord],
    store: InferenceLogStore | None,
    *,
    title: str = "mlcanary demo",
    max_points_per_arm: int = DEFAULT_MAX_POINTS_PER_ARM,
    now: datetime | None = None,
) -> Path:
    """Write the report of ``records`` to ``path`` (parents created, file replaced atomically) and
    return ``path``.

    With ``store``, latency and prediction plots read the inference log of each release's model
    over ``[release start, last tick's end)``, keeping rows whose arm and version match the release
    (as the metrics source does); if that read fails the section falls back to the measurements and
    says so. Without ``store`` every plot comes from the measurements. At most
    ``max_points_per_arm`` latency points per arm and release are drawn (a seeded sample); the
    percentile lines use every row. ``now`` stamps the report (default: the current UTC time).
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    figures = FigureWriter()
    sections = [
        _release_section(index, record, store, figures, max_points_per_arm)
        for index, record in enumerate(records)
    ]
    document = _document(title, stamp, records, sections)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(document, encoding="utf-8")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _release_section(
    index: int,
    record: ReleaseRecord,
    store: InferenceLogStore | None,
    figures: FigureWriter,
    max_points: int,
) -> str:
    release = record.release
    axis = TimeAxis.for_span(release.started_at, span_s(record))
    notes: list[str] = []
    log = None
    if store is not None:
        log, problem = _read_log(record, store)
        if problem:
            notes.append(f"inference log unavailable, plots use the tick measurements: {problem}")
    parts = [
        f'<section id="release-{index + 1}">',
        f"<h2>{_esc(record.title)}</h2>",
        _release_header(record),
    ]
    parts += [f'<p class="note">{_esc(note)}</p>' for note in notes]
    parts.append("<h3>Latency per arm</h3>")
    if log is not None and not log.empty:
        parts.append(figures.render(latency_from_log(record, log, axis, max_points)))
    else:
        parts.append(figures.render(latency_from_ticks(record, axis)))
    parts.append("<h3>Prediction distributions</h3>")
    if log is not None and log["probability"].notna().any():
        parts.append(figures.render(probability_histogram(record, log)))
    else:
        parts.append(figures.render(positive_rate_from_ticks(record, axis)))
    parts.append("<h3>Decisions over time</h3>")
    parts.append(figures.render(decisions_figure(record, axis)))
    parts.append("<h3>Checks at the final tick</h3>")
    parts.append(_checks_table(record))
    if has_shadow(record):
        parts += _shadow_section(record, store, axis, figures, max_points)
    parts.append("</section>")
    return "\n".join(parts)


def _shadow_section(
    record: ReleaseRecord,
    store: InferenceLogStore | None,
    axis: TimeAxis,
    figures: FigureWriter,
    max_points: int,
) -> list[str]:
    from sqlalchemy.exc import SQLAlchemyError

    from mlcanary.telemetry.shadow import fetch_pairs

    release = record.release
    parts = ["<h3>Shadow phase: mirrored requests, no user served by the candidate</h3>"]
    parts.append(figures.render(agreement_figure(record, axis)))
    if store is None:
        return parts
    until = max((m.end for m, _ in record.ticks), default=release.started_at)
    try:
        pairs = fetch_pairs(
            store,
            release.model,
            release.started_at,
            until,
            champion_version=release.champion_version,
            candidate_version=release.candidate_version,
        )
    except SQLAlchemyError as exc:
        return [*parts, f'<p class="note">pairs unavailable: {_esc(type(exc).__name__)}</p>']
    if not pairs.empty:
        parts.append(figures.render(paired_scatter(record, pairs, max_points)))
    return parts


def _release_header(record: ReleaseRecord) -> str:
    release = record.release
    phase = release.phase.value
    colour = PHASE_COLOURS.get(phase, "#555")
    last = last_tick(record)
    items = [
        ("outcome", f'<span class="badge" style="background:{colour}">{_esc(phase)}</span>'),
        ("reason", _esc(final_reason(record) or "—")),
        ("model", _esc(release.model)),
        (
            "versions",
            f"champion v{_esc(release.champion_version)} → candidate v{_esc(release.candidate_version)}",
        ),
        ("started", _esc(release.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))),
        ("duration", _esc(human_duration(duration_s(record)))),
        ("ticks", _esc(len(record.ticks))),
        ("final candidate traffic", f"{_esc(release.traffic)} %"),
    ]
    if last is not None:
        items.append(("last decision", _esc(last[1].action)))
    body = "".join(f"<dt>{key}</dt><dd>{value}</dd>" for key, value in items)
    return f'<dl class="header">{body}</dl>'


def _read_log(record: ReleaseRecord, store: InferenceLogStore) -> tuple[pd.DataFrame | None, str | None]:
    """The release's rows (arm and version matching) over its window, or ``(None, why)``."""
    from sqlalchemy.exc import SQLAlchemyError

    release = record.release
    until = max((m.end for m, _ in record.ticks), default=None)
    try:
        frame = store.fetch(release.model, since=release.started_at, until=until)
    except SQLAlchemyError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    versions = {"champion": release.champion_version, "candidate": release.candidate_version}
    keep = frame["arm"].isin(ARMS) & (frame["version"] == frame["arm"].map(versions))
    columns = ["received_at", "instance_index", "arm", "status_code", "latency_ms", "probability"]
    return frame.loc[keep.to_numpy(dtype=bool, na_value=False), columns].reset_index(drop=True), None


def _checks_table(record: ReleaseRecord) -> str:
    last = last_tick(record)
    if last is None:
        return '<p class="note">No checks were evaluated.</p>'
    decision = last[1]
    return html_table(decision.checks, caption=f"{decision.action}: {decision.reason}")


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1rem 2rem 3rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h3 { margin: 1.2rem 0 0.3rem; color: #444; }
.meta, .note { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { text-align: left; padding: 0.3rem 0; color: #444; }
.badge, .verdict { color: #fff; border-radius: 4px; padding: 0.1rem 0.45rem; font-weight: 600; }
.flag, .ci { color: #888; font-size: 0.8rem; }
tr.verdict-fail td { background: #fdecec; } tr.verdict-error td { background: #f8e8f6; }
tr.verdict-inconclusive td { background: #fff8e1; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; margin: 0.5rem 0; }
dl.header dt { font-weight: 600; color: #555; } dl.header dd { margin: 0; }
.figure { margin: 0.3rem 0 1rem; }
"""


def _summary_table(records: Sequence[ReleaseRecord]) -> str:
    if not records:
        return '<p class="note">No releases.</p>'
    head = "".join(f"<th>{_esc(label)}</th>" for _, label in SUMMARY_COLUMNS)
    rows = []
    for index, row in enumerate(summary_rows(records)):
        cells = []
        for key, _ in SUMMARY_COLUMNS:
            text = _esc(format_summary_value(key, row[key]))
            if key == "release":
                cells.append(f'<td><a href="#release-{index + 1}">{text}</a></td>')
            elif key == "outcome":
                colour = PHASE_COLOURS.get(str(row[key]), "#555")
                cells.append(f'<td><span class="badge" style="background:{colour}">{text}</span></td>')
            elif key == "reason":
                cells.append(f"<td>{text}</td>")
            else:
                cells.append(f'<td class="num">{text}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _document(title: str, stamp: datetime, records: Sequence[ReleaseRecord], sections: list[str]) -> str:
    generated = stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{_esc(title)}</h1>",
            f'<p class="meta">Generated {_esc(generated)} · {len(records)} release(s) · times on the x-axes '
            "are relative to each release's start.</p>",
            "<h2>Summary</h2>",
            _summary_table(records),
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    )


__all__ = [
    "SUMMARY_COLUMNS",
    "ReleaseRecord",
    "format_summary_value",
    "summary_rows",
    "write_report",
]
