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
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcanary.rollout.measurements import ArmMetrics, Measurements

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from mlcanary.rollout.state import CheckResult, Decision, ReleaseState
    from mlcanary.telemetry.store import InferenceLogStore

ARMS: tuple[str, str] = ("champion", "candidate")
ARM_COLOURS: dict[str, str] = {"champion": "#1f77b4", "candidate": "#ff7f0e"}
ACTION_COLOURS: dict[str, str] = {
    "hold": "#7f7f7f",
    "step_up": "#17becf",
    "await_approval": "#9467bd",
    "promote": "#2ca02c",
    "rollback": "#d62728",
}
VERDICT_COLOURS: dict[str, str] = {
    "pass": "#2ca02c",
    "fail": "#d62728",
    "inconclusive": "#e6a700",
    "error": "#b0179b",
}
PHASE_COLOURS: dict[str, str] = {
    "promoted": "#2ca02c",
    "promoting": "#2ca02c",
    "rolled_back": "#d62728",
    "rolling_back": "#d62728",
    "failed": "#b0179b",
}

#: Keys of :func:`summary_rows`, in display order, with their column headings.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("release", "release"),
    ("outcome", "outcome"),
    ("duration_s", "duration"),
    ("ticks", "ticks"),
    ("traffic", "final candidate traffic"),
    ("champion_requests", "champion requests"),
    ("candidate_requests", "candidate requests"),
    ("champion_error_rate", "champion 5xx rate"),
    ("candidate_error_rate", "candidate 5xx rate"),
    ("champion_p95_ms", "champion P95"),
    ("candidate_p95_ms", "candidate P95"),
    ("reason", "final reason"),
)

DEFAULT_MAX_POINTS_PER_ARM = 4000
_HISTOGRAM_BINS = 40
_LATENCY_BUCKETS = 60
_MIN_BUCKET_SAMPLES = 5
_FIGURE_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


@dataclass
class ReleaseRecord:
    """One release as the report shows it.

    ``title`` heads its section (e.g. ``"v2 logistic regression: promoted"``); ``release`` is the
    final state; ``ticks`` holds what each monitor tick measured and decided, oldest first.
    ``initial_traffic`` is the candidate percent set when the canary started (the policy's first
    step); when ``None`` it is inferred from the first tick if that tick held.
    """

    title: str
    release: ReleaseState
    ticks: list[tuple[Measurements, Decision]]
    initial_traffic: int | None = None


# ---- summary -----------------------------------------------------------------------------------


def _last(record: ReleaseRecord) -> tuple[Measurements, Decision] | None:
    return record.ticks[-1] if record.ticks else None


def _duration_s(record: ReleaseRecord) -> float | None:
    last = _last(record)
    if last is None:
        return None
    return max(0.0, (last[1].at - record.release.started_at).total_seconds())


def _final_reason(record: ReleaseRecord) -> str:
    if record.release.reason is not None:
        return record.release.reason
    last = _last(record)
    return last[1].reason if last is not None else ""


def summary_rows(records: Sequence[ReleaseRecord]) -> list[dict[str, Any]]:
    """One dict per release, in order, with the keys of :data:`SUMMARY_COLUMNS` plus ``model``,
    ``champion_version`` and ``candidate_version``.

    Numbers are raw (not formatted) and come from the final tick's cumulative measurements:
    ``*_requests`` (int), ``*_error_rate`` (fraction, ``None`` without requests), ``*_p95_ms``
    (``None`` without latencies). ``duration_s`` runs from the release start to the last decision
    (``None`` without ticks); ``ticks`` counts the ticks given; ``outcome`` is the final phase;
    ``reason`` the release's final reason (else the last decision's, else ``""``).
    """
    rows: list[dict[str, Any]] = []
    for record in records:
        release = record.release
        last = _last(record)
        champion = last[0].champion if last is not None else ArmMetrics()
        candidate = last[0].candidate if last is not None else ArmMetrics()
        rows.append(
            {
                "release": record.title,
                "model": release.model,
                "champion_version": release.champion_version,
                "candidate_version": release.candidate_version,
                "outcome": release.phase.value,
                "duration_s": _duration_s(record),
                "ticks": len(record.ticks),
                "traffic": release.traffic,
                "champion_requests": champion.requests,
                "candidate_requests": candidate.requests,
                "champion_error_rate": champion.error_rate,
                "candidate_error_rate": candidate.error_rate,
                "champion_p95_ms": champion.latency_ms.p95 if champion.latency_ms else None,
                "candidate_p95_ms": candidate.latency_ms.p95 if candidate.latency_ms else None,
                "reason": _final_reason(record),
            }
        )
    return rows


def format_duration(seconds: float | None) -> str:
    """``"42 s"``, ``"3.5 min"`` or ``"25.0 h"``; ``"—"`` for ``None``."""
    if seconds is None:
        return "—"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def format_summary_value(key: str, value: Any) -> str:
    """A :func:`summary_rows` value as display text (unescaped): durations humanised, rates as
    percentages, latencies in ms, ``"—"`` for ``None``."""
    if value is None:
        return "—"
    if key == "duration_s":
        return format_duration(float(value))
    if key.endswith("_error_rate"):
        return f"{100 * float(value):.2f} %"
    if key.endswith("_ms"):
        return f"{float(value):.1f} ms"
    if key == "traffic":
        return f"{value} %"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---- writing -----------------------------------------------------------------------------------


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
    figures = _FigureWriter()
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


class _FigureWriter:
    """Renders figures to HTML fragments; the first one carries the plotly.js bundle."""

    def __init__(self) -> None:
        self.bundled = False

    def render(self, figure: go.Figure) -> str:
        fragment = figure.to_html(
            full_html=False,
            include_plotlyjs=not self.bundled,
            include_mathjax=False,
            config=_FIGURE_CONFIG,
            default_width="100%",
        )
        self.bundled = True
        return f'<div class="figure">{fragment}</div>'


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _plot_text(value: object, width: int = 80) -> str:
    """Text for plotly labels and hovers: entities escaped (plotly renders a subset of HTML and
    decodes entities back), long lines wrapped with ``<br>``."""
    lines = textwrap.wrap(str(value), width=width) or [""]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


# ---- time axis ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TimeAxis:
    """Seconds since the release start, shown in s, min or h depending on the span."""

    start: datetime
    divisor: float
    unit: str

    @classmethod
    def for_span(cls, start: datetime, span_s: float) -> _TimeAxis:
        if span_s > 3 * 3600:
            return cls(start, 3600.0, "h")
        if span_s > 300:
            return cls(start, 60.0, "min")
        return cls(start, 1.0, "s")

    @property
    def title(self) -> str:
        return f"time since release start ({self.unit})"

    def of(self, moment: datetime) -> float:
        return round((moment - self.start).total_seconds() / self.divisor, 4)


def _span_s(record: ReleaseRecord) -> float:
    ends = [m.end for m, _ in record.ticks] + [d.at for _, d in record.ticks]
    return max([(end - record.release.started_at).total_seconds() for end in ends], default=0.0)


# ---- per release -------------------------------------------------------------------------------


def _release_section(
    index: int,
    record: ReleaseRecord,
    store: InferenceLogStore | None,
    figures: _FigureWriter,
    max_points: int,
) -> str:
    release = record.release
    axis = _TimeAxis.for_span(release.started_at, _span_s(record))
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
        parts.append(figures.render(_latency_from_log(record, log, axis, max_points)))
    else:
        parts.append(figures.render(_latency_from_ticks(record, axis)))
    parts.append("<h3>Prediction distributions</h3>")
    if log is not None and log["probability"].notna().any():
        parts.append(figures.render(_probability_histogram(record, log)))
    else:
        parts.append(figures.render(_positive_rate_from_ticks(record, axis)))
    parts.append("<h3>Decisions over time</h3>")
    parts.append(figures.render(_decisions_figure(record, axis)))
    parts.append("<h3>Checks at the final tick</h3>")
    parts.append(_checks_table(record))
    parts.append("</section>")
    return "\n".join(parts)


def _release_header(record: ReleaseRecord) -> str:
    release = record.release
    phase = release.phase.value
    colour = PHASE_COLOURS.get(phase, "#555")
    last = _last(record)
    items = [
        ("outcome", f'<span class="badge" style="background:{colour}">{_esc(phase)}</span>'),
        ("reason", _esc(_final_reason(record) or "—")),
        ("model", _esc(release.model)),
        (
            "versions",
            f"champion v{_esc(release.champion_version)} → candidate v{_esc(release.candidate_version)}",
        ),
        ("started", _esc(release.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))),
        ("duration", _esc(format_duration(_duration_s(record)))),
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


def _arm_label(record: ReleaseRecord, arm: str) -> str:
    version = record.release.champion_version if arm == "champion" else record.release.candidate_version
    return f"{arm} v{version}"


def _base_layout(figure: go.Figure, title: str, height: int = 380) -> None:
    figure.update_layout(
        title={"text": _plot_text(title, 120), "font": {"size": 14}},
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
        hovermode="closest",
    )


def _decision_lines(figure: go.Figure, record: ReleaseRecord, axis: _TimeAxis) -> None:
    """Vertical lines where the judge changed the traffic (step up, promote, roll back)."""
    for _, decision in record.ticks:
        if decision.action != "hold":
            figure.add_vline(
                x=axis.of(decision.at),
                line={"color": ACTION_COLOURS.get(decision.action, "#555"), "dash": "dot", "width": 1.5},
            )


def _latency_from_log(
    record: ReleaseRecord, log: pd.DataFrame, axis: _TimeAxis, max_points: int
) -> go.Figure:
    import numpy as np
    import plotly.graph_objects as go

    figure = go.Figure()
    start = axis.start
    heads = log[(log["instance_index"] == 0).fillna(False).astype(bool) & log["latency_ms"].notna()]
    seconds_all = (heads["received_at"] - start).dt.total_seconds().to_numpy(dtype=float)
    span = float(seconds_all.max()) if seconds_all.size else 0.0
    width = max(span / _LATENCY_BUCKETS, 1e-9)
    rng = np.random.default_rng(0)
    for arm in ARMS:
        rows = heads[heads["arm"] == arm]
        if rows.empty:
            continue
        seconds = (rows["received_at"] - start).dt.total_seconds().to_numpy(dtype=float)
        latency = rows["latency_ms"].to_numpy(dtype=float)
        failed = rows["status_code"].to_numpy(dtype="float64", na_value=np.nan) >= 500
        colour = ARM_COLOURS[arm]
        label = _arm_label(record, arm)
        for mask, suffix, marker in (
            (~failed, "", {"size": 4, "opacity": 0.35, "color": colour}),
            (failed, " 5xx", {"size": 8, "symbol": "x", "color": colour, "line": {"width": 1}}),
        ):
            chosen = np.flatnonzero(mask)
            if chosen.size == 0:
                continue
            if chosen.size > max_points:
                chosen = np.sort(rng.choice(chosen, size=max_points, replace=False))
            figure.add_trace(
                go.Scatter(
                    x=np.round(seconds[chosen] / axis.divisor, 4).tolist(),
                    y=np.round(latency[chosen], 2).tolist(),
                    mode="markers",
                    marker=marker,
                    name=_plot_text(f"{label} requests{suffix} (n={int(mask.sum()):,})"),
                    legendgroup=arm,
                    hovertemplate="%{y:.1f} ms<extra></extra>",
                )
            )
        buckets = np.floor(seconds / width).astype(int)
        centres: list[float] = []
        p50: list[float] = []
        p95: list[float] = []
        for bucket in np.unique(buckets):
            values = latency[buckets == bucket]
            if values.size < _MIN_BUCKET_SAMPLES:
                continue
            centres.append(round((bucket + 0.5) * width / axis.divisor, 4))
            low, high = np.percentile(values, [50, 95])
            p50.append(round(float(low), 2))
            p95.append(round(float(high), 2))
        for name, values, dash in (("P50", p50, "solid"), ("P95", p95, "dash")):
            if values:
                figure.add_trace(
                    go.Scatter(
                        x=centres,
                        y=values,
                        mode="lines",
                        line={"color": colour, "dash": dash, "width": 2.5},
                        name=_plot_text(f"{label} {name}"),
                        legendgroup=arm,
                        hovertemplate=f"{name} %{{y:.1f}} ms<extra></extra>",
                    )
                )
    _decision_lines(figure, record, axis)
    _base_layout(figure, "Latency per request; P50 and P95 per time bucket (dotted lines: traffic changes)")
    figure.update_xaxes(title_text=axis.title)
    figure.update_yaxes(title_text="latency (ms)", rangemode="tozero")
    return figure


def _latency_from_ticks(record: ReleaseRecord, axis: _TimeAxis) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    for arm in ARMS:
        points = [(axis.of(m.end), getattr(m, arm).latency_ms) for m, _ in record.ticks]
        points = [(x, p) for x, p in points if p is not None]
        label = _arm_label(record, arm)
        for name, dash in (("p50", "solid"), ("p95", "dash"), ("p99", "dot")):
            if points:
                figure.add_trace(
                    go.Scatter(
                        x=[x for x, _ in points],
                        y=[round(getattr(p, name), 2) for _, p in points],
                        mode="lines+markers",
                        line={"color": ARM_COLOURS[arm], "dash": dash},
                        name=_plot_text(f"{label} {name.upper()}"),
                        legendgroup=arm,
                        hovertemplate=f"{name.upper()} %{{y:.1f}} ms<extra></extra>",
                    )
                )
    _decision_lines(figure, record, axis)
    _base_layout(figure, "Latency percentiles per tick (cumulative since the release started)")
    figure.update_xaxes(title_text=axis.title)
    figure.update_yaxes(title_text="latency (ms)", rangemode="tozero")
    return figure


def _probability_histogram(record: ReleaseRecord, log: pd.DataFrame) -> go.Figure:
    import numpy as np
    import plotly.graph_objects as go

    figure = go.Figure()
    edges = np.linspace(0.0, 1.0, _HISTOGRAM_BINS + 1)
    centres = np.round((edges[:-1] + edges[1:]) / 2, 4).tolist()
    for arm in ARMS:
        values = log.loc[log["arm"] == arm, "probability"].dropna().to_numpy(dtype=float)
        if values.size == 0:
            continue
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
        share = np.round(counts / values.size, 5).tolist()
        name = f"{_arm_label(record, arm)} (n={values.size:,}, mean {values.mean():.3f})"
        figure.add_trace(
            go.Bar(
                x=centres,
                y=share,
                width=1.0 / _HISTOGRAM_BINS,
                marker={"color": ARM_COLOURS[arm]},
                opacity=0.55,
                name=_plot_text(name),
                hovertemplate="p≈%{x:.3f}: %{y:.1%}<extra></extra>",
            )
        )
    _base_layout(figure, "Predicted probability of the positive class, per arm (share of predictions)")
    figure.update_layout(barmode="overlay", bargap=0)
    figure.update_xaxes(title_text="probability", range=[0, 1])
    figure.update_yaxes(title_text="share of predictions", tickformat=".0%")
    return figure


def _positive_rate_from_ticks(record: ReleaseRecord, axis: _TimeAxis) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    for arm in ARMS:
        label = _arm_label(record, arm)
        for attribute, dash, what in (
            ("positive_rate", "solid", "positive rate"),
            ("mean_probability", "dash", "mean probability"),
        ):
            points = [(axis.of(m.end), getattr(getattr(m, arm), attribute)) for m, _ in record.ticks]
            points = [(x, v) for x, v in points if v is not None]
            if points:
                figure.add_trace(
                    go.Scatter(
                        x=[x for x, _ in points],
                        y=[round(float(v), 5) for _, v in points],
                        mode="lines+markers",
                        line={"color": ARM_COLOURS[arm], "dash": dash},
                        name=_plot_text(f"{label} {what}"),
                        legendgroup=arm,
                    )
                )
    _base_layout(figure, "Positive rate and mean probability per tick (cumulative; no inference log given)")
    figure.update_xaxes(title_text=axis.title)
    figure.update_yaxes(title_text="share", tickformat=".0%", rangemode="tozero")
    return figure


def _decisions_figure(record: ReleaseRecord, axis: _TimeAxis) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.6, 0.4],
        subplot_titles=("candidate traffic (%) and decisions", "cumulative 5xx rate per arm"),
    )
    ticks = record.ticks
    initial = record.initial_traffic
    if initial is None and ticks and ticks[0][1].action == "hold":
        initial = ticks[0][1].traffic
    xs = [axis.of(d.at) for _, d in ticks]
    ys = [d.traffic for _, d in ticks]
    if initial is not None:
        xs, ys = [0.0, *xs], [initial, *ys]
    figure.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"shape": "hv", "color": "#444", "width": 2},
            name="candidate traffic",
            hoverinfo="skip",
        ),
        row=1,
        col=1,
    )
    for action, colour in ACTION_COLOURS.items():
        chosen = [d for _, d in ticks if d.action == action]
        if not chosen:
            continue
        figure.add_trace(
            go.Scatter(
                x=[axis.of(d.at) for d in chosen],
                y=[d.traffic for d in chosen],
                mode="markers",
                marker={
                    "color": colour,
                    "size": 11 if action != "hold" else 8,
                    "line": {"width": 1, "color": "#fff"},
                },
                name=action,
                text=[_plot_text(f"{d.action} → {d.traffic} %: {d.reason}") for d in chosen],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for arm in ARMS:
        points = [(axis.of(m.end), getattr(m, arm)) for m, _ in ticks]
        points = [(x, a) for x, a in points if a.error_rate is not None]
        if not points:
            continue
        figure.add_trace(
            go.Scatter(
                x=[x for x, _ in points],
                y=[round(float(a.error_rate or 0.0), 6) for _, a in points],
                mode="lines+markers",
                line={"color": ARM_COLOURS[arm]},
                name=_plot_text(f"{_arm_label(record, arm)} 5xx rate"),
                text=[f"{a.errors:,} of {a.requests:,} requests" for _, a in points],
                hovertemplate="%{y:.2%} (%{text})<extra></extra>",
            ),
            row=2,
            col=1,
        )
    _base_layout(figure, "Decisions over time (hover a marker for the reason)", height=480)
    figure.update_yaxes(title_text="traffic (%)", range=[-5, 105], row=1, col=1)
    figure.update_yaxes(title_text="5xx rate", tickformat=".1%", rangemode="tozero", row=2, col=1)
    figure.update_xaxes(title_text=axis.title, row=2, col=1)
    return figure


def _checks_table(record: ReleaseRecord) -> str:
    last = _last(record)
    if last is None or not last[1].checks:
        return '<p class="note">No checks were evaluated.</p>'
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "check",
            "verdict",
            "champion",
            "candidate",
            "requirement",
            "test",
            "n (champion / candidate)",
        )
    )
    body = "".join(_check_row(check) for check in last[1].checks)
    decision = last[1]
    caption = f"{_esc(decision.action)}: {_esc(decision.reason)}"
    return (
        f'<table class="checks"><caption>{caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _check_row(check: CheckResult) -> str:
    flags = " (critical)" if check.critical else " (advisory)" if check.advisory else ""
    colour = VERDICT_COLOURS.get(check.verdict, "#555")
    candidate = _esc(_fmt(check.value))
    if check.ci_low is not None and check.ci_high is not None:
        candidate += f' <span class="ci">[{_esc(_fmt(check.ci_low))}, {_esc(_fmt(check.ci_high))}]</span>'
    n = f"{'—' if check.n_champion is None else f'{check.n_champion:,}'} / " + (
        "—" if check.n_candidate is None else f"{check.n_candidate:,}"
    )
    detail = f' title="{_esc(check.detail)}"' if check.detail else ""
    cells = [
        f'<td{detail}>{_esc(check.name)}<span class="flag">{_esc(flags)}</span></td>',
        f'<td><span class="verdict" style="background:{colour}">{_esc(check.verdict)}</span></td>',
        f'<td class="num">{_esc(_fmt(check.baseline))}</td>',
        f'<td class="num">{candidate}</td>',
        f"<td>{_esc(check.threshold or '—')}</td>",
        f"<td>{_esc(check.test or '—')}</td>",
        f'<td class="num">{_esc(n)}</td>',
    ]
    return f'<tr class="verdict-{_esc(check.verdict)}">{"".join(cells)}</tr>'


# ---- document ----------------------------------------------------------------------------------

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
    "format_duration",
    "format_summary_value",
    "summary_rows",
    "write_report",
]
