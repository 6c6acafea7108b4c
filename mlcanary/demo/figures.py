"""The plots of the HTML report, per release: latency per arm, prediction distributions and the
decisions over time (plotly; imported inside the functions)."""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlcanary.demo.summary import ReleaseRecord
from mlcanary.rollout.arms import ARMS

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

ARM_COLOURS: dict[str, str] = {"champion": "#1f77b4", "candidate": "#ff7f0e"}
ACTION_COLOURS: dict[str, str] = {
    "hold": "#7f7f7f",
    "step_up": "#17becf",
    "await_approval": "#9467bd",
    "promote": "#2ca02c",
    "rollback": "#d62728",
}

_HISTOGRAM_BINS = 40
_LATENCY_BUCKETS = 60
_MIN_BUCKET_SAMPLES = 5
_FIGURE_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


class FigureWriter:
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


def _plot_text(value: object, width: int = 80) -> str:
    """Text for plotly labels and hovers: entities escaped (plotly renders a subset of HTML and
    decodes entities back), long lines wrapped with ``<br>``."""
    lines = textwrap.wrap(str(value), width=width) or [""]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


@dataclass(frozen=True)
class TimeAxis:
    """Seconds since the release start, shown in s, min or h depending on the span."""

    start: datetime
    divisor: float
    unit: str

    @classmethod
    def for_span(cls, start: datetime, span_s: float) -> TimeAxis:
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


def span_s(record: ReleaseRecord) -> float:
    ends = [m.end for m, _ in record.ticks] + [d.at for _, d in record.ticks]
    return max([(end - record.release.started_at).total_seconds() for end in ends], default=0.0)


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


def _decision_lines(figure: go.Figure, record: ReleaseRecord, axis: TimeAxis) -> None:
    """Vertical lines where the judge changed the traffic (step up, promote, roll back)."""
    for _, decision in record.ticks:
        if decision.action != "hold":
            figure.add_vline(
                x=axis.of(decision.at),
                line={"color": ACTION_COLOURS.get(decision.action, "#555"), "dash": "dot", "width": 1.5},
            )


def latency_from_log(record: ReleaseRecord, log: pd.DataFrame, axis: TimeAxis, max_points: int) -> go.Figure:
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


def latency_from_ticks(record: ReleaseRecord, axis: TimeAxis) -> go.Figure:
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


def probability_histogram(record: ReleaseRecord, log: pd.DataFrame) -> go.Figure:
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


def positive_rate_from_ticks(record: ReleaseRecord, axis: TimeAxis) -> go.Figure:
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


def decisions_figure(record: ReleaseRecord, axis: TimeAxis) -> go.Figure:
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
