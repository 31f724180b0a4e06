"""The report's plotly figures, each drawn from `ReportData`, and the section that holds one.

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

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from common.progress import log
from search.config import StudyConfig
from search.errors import one_line
from search.results.report_calibration import reliability_figure
from search.results.report_data import ReportData, Unavailable, backbone_of, duration_of
from search.results.report_footprint import latency_figure, pareto_figure

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
