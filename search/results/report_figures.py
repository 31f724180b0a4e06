"""The report's plotly figures, each drawn from `ReportData`, and the section that holds one:
the search's history, curves and importances, the backbones, durations, the confusion
matrix, the reliability diagram of the held-out test split and the deployment footprint.

A builder raises `Unavailable` when the study cannot draw its figure yet; `render_figure`
turns that (or any other failure) into a placeholder that says why.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from common.progress import log
from search.config import StudyConfig
from search.constraints import is_feasible
from search.errors import one_line
from search.results.report_data import ReportData, Unavailable, backbone_of, duration_of

STATE_COLOURS = {
    TrialState.COMPLETE: "#1f77b4",
    TrialState.PRUNED: "#ff7f0e",
    TrialState.FAIL: "#d62728",
    TrialState.RUNNING: "#7f7f7f",
}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

Builder = Callable[[ReportData], go.Figure]

# ---------------------------------------------------------------- axes and hover text


def _whole_number_ticks(fig: go.Figure, largest: int) -> go.Figure:
    """Ticks on whole numbers only (trial numbers, epochs), at most about ten of them."""
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(largest / 10)))
    return fig


def _hover(trial: FrozenTrial, config: StudyConfig) -> str:
    return f"trial {trial.number} ({backbone_of(trial, config)})"


# ---------------------------------------------------------------- figures


def history_figure(data: ReportData) -> go.Figure:
    data.require_completed()
    fig = optuna.visualization.plot_optimization_history(
        data.study, target=data.target, target_name=data.metric
    )
    return _whole_number_ticks(fig, max(t.number for t in data.trials))


def _curve(trial: FrozenTrial, data: ReportData) -> dict[int, float]:
    """The values reported to Optuna each epoch; in a multi-objective study, which reports
    none (it cannot prune), the recorded history of the monitored metric."""
    if trial.intermediate_values:
        return trial.intermediate_values
    values = (trial.user_attrs.get("history") or {}).get(data.config.objective.monitor) or []
    return dict(enumerate(values))


def learning_curves_figure(data: ReportData) -> go.Figure:
    """Every trial's per-epoch validation metric, one trace per final state (pruned dotted)."""
    curves = [t for t in data.trials if _curve(t, data)]
    if not curves:
        raise Unavailable("no trial has reported a validation epoch yet")
    fig = go.Figure()
    for state in sorted({t.state for t in curves}, key=lambda s: s.value):
        x: list[int | None] = []
        y: list[float | None] = []
        text: list[str] = []
        for t in (t for t in curves if t.state == state):
            curve = _curve(t, data)
            steps = sorted(curve)
            # A None between two trials breaks the line, so one trace holds them all.
            x += [*steps, None]
            y += [*(curve[s] for s in steps), None]
            text += [_hover(t, data.config)] * (len(steps) + 1)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=f"{state.name.lower()} trials",
                line={
                    "color": STATE_COLOURS.get(state, "#7f7f7f"),
                    "dash": "dot" if state == TrialState.PRUNED else "solid",
                },
                marker={"size": 5},
                hovertext=text,
                hovertemplate="%{hovertext}<br>epoch %{x}: %{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(xaxis_title="epoch (step reported to Optuna)", yaxis_title=data.metric)
    return _whole_number_ticks(fig, max(max(_curve(t, data)) for t in curves))


def importances_figure(data: ReportData) -> go.Figure:
    done = data.require_completed(2)
    if len({data.score(t) for t in done}) < 2:
        raise Unavailable(f"every completed trial scored the same {data.metric}")
    shared = set.intersection(*(set(t.params) for t in done))
    varied = sorted(n for n in shared if len({repr(t.params[n]) for t in done}) > 1)
    if not varied:
        raise Unavailable("the completed trials all used the same parameter values")
    target = data.target
    if target is not None and data.config.objective.direction == "maximize":
        # A multi-objective study's importances (PED-ANOVA) are those of reaching low values.
        target = partial(_negated_score, data)
    with warnings.catch_warnings():  # PED-ANOVA says so whenever a target is given
        warnings.simplefilter("ignore", UserWarning)
        return optuna.visualization.plot_param_importances(
            data.study, params=varied, target=target, target_name=data.metric
        )


def _negated_score(data: ReportData, trial: FrozenTrial) -> float:
    return -float(data.score(trial))  # type: ignore[arg-type]


def parallel_figure(data: ReportData) -> go.Figure:
    data.require_completed()
    return optuna.visualization.plot_parallel_coordinate(
        data.study, target=data.target, target_name=data.metric
    )


def backbone_figure(data: ReportData) -> go.Figure:
    """The validation metric of the completed trials, one box per backbone."""
    groups: dict[str, list[FrozenTrial]] = {}
    for t in data.require_completed():
        groups.setdefault(backbone_of(t, data.config), []).append(t)
    fig = go.Figure()
    for name, trials in sorted(groups.items()):
        fig.add_trace(
            go.Box(
                y=[data.score(t) for t in trials],
                name=name,
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                hovertext=[f"trial {t.number}" for t in trials],
                hovertemplate="%{hovertext}: %{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(showlegend=False, xaxis_title="backbone", yaxis_title=data.metric)
    return fig


def duration_figure(data: ReportData) -> go.Figure:
    """Wall time against the metric; a pruned trial shows the last value it reported."""
    fig = go.Figure()
    for state, label in ((TrialState.COMPLETE, "completed"), (TrialState.PRUNED, "pruned")):
        points = [
            (duration_of(t), t)
            for t in data.trials
            if t.state == state and t.values is not None and duration_of(t) is not None
        ]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[d for d, _ in points],
                y=[data.score(t) for _, t in points],
                mode="markers",
                name=label,
                marker={"color": STATE_COLOURS[state], "size": 10},
                hovertext=[_hover(t, data.config) for _, t in points],
                hovertemplate="%{hovertext}<br>%{x:.1f} s, %{y:.4f}<extra></extra>",
            )
        )
    if not fig.data:
        raise Unavailable("no finished trial with a recorded duration and value")
    fig.update_layout(xaxis_title="trial duration (s)", yaxis_title=data.metric)
    return fig


def confusion_figure(data: ReportData) -> go.Figure:
    """The held-out test confusion matrix of the retrained best configuration."""
    result = data.train_best or {}
    test = result.get("test") or {}
    matrix = test.get("confusion_matrix")
    classes = test.get("classes") or result.get("classes")
    if not matrix or not classes:
        raise Unavailable("the train-best result holds no confusion matrix")
    text = []
    for row in matrix:
        total = sum(row)
        text.append([f"{n}<br>{n / total:.0%}" if total else str(n) for n in row])
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=classes,
            y=classes,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
        )
    )
    fig.update_layout(xaxis_title="predicted class", yaxis_title="true class")
    fig.update_yaxes(autorange="reversed")
    return fig


# ---------------------------------------------------------------- calibration: the held-out
# test split's accuracy against confidence per bin, before and after temperature scaling

CURVES = (("before", "before calibration", "#ff7f0e"), ("after", "after calibration", "#1f77b4"))


def _points(bins: dict[str, Any]) -> tuple[list[float], list[float], list[int]]:
    """The non-empty bins' mean confidence, accuracy and image count."""
    rows = [
        (c, a, n)
        for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"], strict=True)
        if n
    ]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def reliability_figure(data: ReportData) -> go.Figure:
    """Accuracy against mean confidence per bin on the test split, before and after."""
    calibration = (data.train_best or {}).get("calibration") or {}
    curves = calibration.get("reliability") or {}
    if not curves.get("before"):
        raise Unavailable("the train-best result holds no reliability data (run train-best again)")
    test = calibration.get("test") or {}
    fig = go.Figure(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfectly calibrated",
            line={"color": "#888", "dash": "dash"},
            hoverinfo="skip",
        )
    )
    for key, label, colour in CURVES:
        bins = curves.get(key)
        if not bins:
            continue
        x, y, n = _points(bins)
        ece = test.get(f"ece_{key}")
        name = f"{label} (ECE {ece:.3f})" if isinstance(ece, int | float) else label
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                customdata=n,
                mode="lines+markers",
                name=name,
                line={"color": colour},
                marker={"size": [6 + min(14, c**0.5 * 2) for c in n], "color": colour},
                hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>"
                "%{customdata} images<extra></extra>",
            )
        )
    t = calibration.get("temperature")
    fig.update_layout(
        xaxis_title="mean confidence in the bin"
        + (f" (temperature {t:.3f})" if isinstance(t, int | float) else ""),
        yaxis_title="accuracy in the bin",
    )
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.02])
    return fig


# ---------------------------------------------------------------- footprint: the validation
# metric against latency at batch 1, and the trials no other beats on both (the front)


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


SEARCH_FIGURES: tuple[tuple[str, Builder], ...] = (
    ("Optimisation history", history_figure),
    ("Learning curves (pruned trials dotted)", learning_curves_figure),
    ("Parameter importances", importances_figure),
    ("Parallel coordinates", parallel_figure),
    ("Validation metric per backbone", backbone_figure),
    ("Trial duration against the metric", duration_figure),
    ("Latency per image against the metric", latency_figure),
)
MULTI_FIGURES: tuple[tuple[str, Builder], ...] = (("Pareto front", pareto_figure),)
TEST_FIGURES: tuple[tuple[str, Builder], ...] = (
    ("Confusion matrix on the held-out test split", confusion_figure),
    ("Reliability diagram on the held-out test split", reliability_figure),
)

# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class Rendered:
    """One figure's HTML section and whether it holds a plot (not a placeholder)."""

    html: str
    drawn: bool


def render_figure(title: str, builder: Builder, data: ReportData) -> Rendered:
    """One figure section: the plot, or a placeholder that says why there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fig = builder(data)
        if not fig.data:
            raise Unavailable("nothing to plot yet")
    except Unavailable as exc:
        body, drawn = f'<div class="placeholder">{html.escape(str(exc))}</div>', False
    except Exception as exc:  # noqa: BLE001 - one figure never costs the whole report
        reason = one_line(f"{type(exc).__name__}: {exc}")
        log(f"report: could not draw {title!r}: {reason}")
        body = f'<div class="placeholder">could not draw this figure: {html.escape(reason)}</div>'
        drawn = False
    else:
        fig.update_layout(title=None, template="plotly_white", height=440, margin_t=30)
        body = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)
        drawn = True
    section = f'<section class="figure">\n<h3>{html.escape(title)}</h3>\n{body}\n</section>'
    return Rendered(section, drawn)
