"""The report's figure of each trial's deployment footprint (`models.footprint`): the
validation metric against latency at batch 1, with the trials that no other trial beats on
both (the front a user picks a deployable model from)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from search.constraints import is_feasible
from search.results.report_data import ReportData, Unavailable, backbone_of


def front(points: list[tuple[float, float, Any]], maximize: bool) -> list[tuple[float, float, Any]]:
    """The points (latency, value, item) that no other point beats on both: as fast or faster
    and as good or better, one of them strictly. Sorted by latency."""
    sign = 1.0 if maximize else -1.0
    out: list[tuple[float, float, Any]] = []
    best = -float("inf")
    for latency, value, item in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if sign * value > best:
            out.append((latency, value, item))
            best = sign * value
    return out


def latency_figure(data: ReportData) -> go.Figure:
    """The validation metric against latency (log axis) of the completed trials; the front
    joined by a line, infeasible trials (they break a constraint) hollow."""
    measured = [t for t in data.require_completed() if "latency_ms" in t.user_attrs]
    if not measured:
        raise Unavailable("no completed trial has a measured latency yet")
    fig = go.Figure()
    for feasible, label in ((True, "trials"), (False, "infeasible trials")):
        trials = [t for t in measured if is_feasible(t) == feasible]
        if not trials:
            continue
        fig.add_trace(
            go.Scatter(
                x=[t.user_attrs["latency_ms"] for t in trials],
                y=[data.score(t) for t in trials],
                mode="markers",
                name=label,
                marker={"size": 10, "symbol": "circle" if feasible else "circle-open"},
                hovertext=[
                    f"trial {t.number} ({backbone_of(t, data.config)}), "
                    f"{t.user_attrs.get('params_m', 0.0):.3f} M params"
                    for t in trials
                ],
                hovertemplate="%{hovertext}<br>%{x:.2f} ms, %{y:.4f}<extra></extra>",
            )
        )
    points = [(t.user_attrs["latency_ms"], data.score(t), t) for t in measured if is_feasible(t)]
    best = front(points, data.config.objective.direction == "maximize")
    if best:
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in best],
                y=[p[1] for p in best],
                mode="lines",
                line={"shape": "hv", "dash": "dash", "color": "#2ca02c"},
                name="front (nothing both faster and better)",
                hoverinfo="skip",
            )
        )
    fig.update_xaxes(type="log")
    fig.update_layout(xaxis_title="latency per image at batch 1 (ms)", yaxis_title=data.metric)
    return fig


def pareto_figure(data: ReportData) -> go.Figure:
    """Optuna's Pareto-front plot of a multi-objective study (two or three objectives)."""
    import optuna

    names = data.config.objective.names
    if len(names) > 3:
        raise Unavailable(f"{len(names)} objectives: the front is listed above, not drawn")
    data.require_completed()
    return optuna.visualization.plot_pareto_front(data.study, target_names=names)
