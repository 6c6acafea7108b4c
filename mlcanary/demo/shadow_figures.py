"""The report's plots of a release's shadow phase: paired agreement tick by tick, and each mirrored
request's candidate probability against the champion's on the same input.

Only releases that went through a shadow phase get them (:func:`has_shadow`). Importing this module
has no side effects; plotly is imported inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlcanary.demo.figures import TimeAxis, _base_layout
from mlcanary.demo.summary import ReleaseRecord

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go


def has_shadow(record: ReleaseRecord) -> bool:
    """Whether any tick of the release measured pairs (it had a shadow phase)."""
    return any(m.paired is not None for m, _ in record.ticks)


def agreement_figure(record: ReleaseRecord, axis: TimeAxis) -> go.Figure:
    """Cumulative paired agreement and mirrored requests per shadow tick."""
    import plotly.graph_objects as go

    ticks = [(m, d) for m, d in record.ticks if m.paired is not None]
    figure = go.Figure()
    x = [axis.of(d.at) for _, d in ticks]
    agreement = [m.paired.agreement.rate if m.paired else None for m, _ in ticks]
    mirrored = [m.paired.mirrored if m.paired else 0 for m, _ in ticks]
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[None if a is None else round(a * 100, 3) for a in agreement],
            mode="lines+markers",
            name="same label (%)",
            line={"color": "#2a9d8f"},
        )
    )
    figure.add_trace(
        go.Bar(
            x=x,
            y=mirrored,
            name="mirrored requests answered",
            yaxis="y2",
            marker={"color": "#ccc"},
            opacity=0.5,
        )
    )
    _base_layout(figure, "Shadow: both models on the same requests — paired agreement per tick")
    figure.update_layout(
        xaxis={"title": axis.title},
        yaxis={"title": "agreement (%)", "range": [0, 101]},
        yaxis2={"title": "mirrored", "overlaying": "y", "side": "right", "showgrid": False},
    )
    return figure


def paired_scatter(record: ReleaseRecord, pairs: pd.DataFrame, max_points: int) -> go.Figure:
    """Each mirrored request: the candidate's probability (y) against the champion's (x)."""
    import plotly.graph_objects as go

    scored = pairs.dropna(subset=["champion_probability", "candidate_probability"])
    if len(scored) > max_points:
        scored = scored.sample(n=max_points, random_state=0).sort_values("received_at")
    agree = scored["champion_prediction"] == scored["candidate_prediction"]
    figure = go.Figure()
    for mask, name, colour in ((agree, "same label", "#2a9d8f"), (~agree, "different label", "#e63946")):
        part = scored[mask.to_numpy(dtype=bool)]
        figure.add_trace(
            go.Scattergl(
                x=part["champion_probability"].round(4),
                y=part["candidate_probability"].round(4),
                mode="markers",
                name=f"{name} ({len(part)})",
                marker={"color": colour, "size": 5, "opacity": 0.6},
            )
        )
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="equal", line={"color": "#999", "dash": "dot"})
    )
    release = record.release
    _base_layout(figure, "Shadow: probability of the positive class on the same mirrored requests")
    figure.update_layout(
        xaxis={"title": f"champion v{release.champion_version}", "range": [0, 1]},
        yaxis={"title": f"candidate v{release.candidate_version}", "range": [0, 1]},
    )
    return figure
