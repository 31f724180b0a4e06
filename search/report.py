"""`tumor-search report`: one self-contained HTML file that shows how a study went.

The page embeds plotly.js once and every figure as a plotly div, so it opens offline.
A figure the study cannot draw yet (too few trials, nothing varied) becomes a short
placeholder that says why; the report is written either way.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import yaml
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from data.cache import atomic_write_bytes
from data.progress import log
from search.config import StudyConfig
from search.errors import one_line
from search.study import BUDGET_ATTR, CONFIG_ATTR, TRIAL_CONFIG_ATTR, describe_storage, open_study

TRAIN_BEST_ATTR = "train_best"
STATE_COLOURS = {
    TrialState.COMPLETE: "#1f77b4",
    TrialState.PRUNED: "#ff7f0e",
    TrialState.FAIL: "#d62728",
    TrialState.RUNNING: "#7f7f7f",
}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class Unavailable(Exception):
    """The study cannot draw this figure yet; the message says why."""


@dataclass(frozen=True)
class ReportData:
    """What the figure builders read: the study, its config and its trials, loaded once."""

    study: optuna.Study
    config: StudyConfig
    trials: tuple[FrozenTrial, ...]

    @property
    def metric(self) -> str:
        return self.config.objective.metric

    @property
    def completed(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def train_best(self) -> dict[str, Any] | None:
        return self.study.user_attrs.get(TRAIN_BEST_ATTR)

    def require_completed(self, n: int = 1) -> list[FrozenTrial]:
        """The completed trials, or `Unavailable` when there are fewer than `n`."""
        done = self.completed
        if len(done) < n:
            raise Unavailable(
                f"needs at least {n} completed trial{'s' if n > 1 else ''}; "
                f"the study has {len(done)}"
            )
        return done


Builder = Callable[[ReportData], go.Figure]

# ---------------------------------------------------------------- trial facts


def backbone_of(trial: FrozenTrial, config: StudyConfig) -> str:
    """The trial's backbone: a sampled param, else its recorded TrialConfig, else the
    space's only backbone."""
    recorded = trial.user_attrs.get(TRIAL_CONFIG_ATTR) or {}
    name = trial.params.get("backbone") or recorded.get("backbone")
    if name:
        return str(name)
    backbones = config.space.backbones
    return backbones[0] if len(backbones) == 1 else "unknown"


def duration_of(trial: FrozenTrial) -> float | None:
    """Seconds the trial took: its recorded wall time, else start to finish."""
    wall = trial.user_attrs.get("wall_seconds")
    if isinstance(wall, int | float):
        return float(wall)
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def _whole_number_ticks(fig: go.Figure, largest: int) -> go.Figure:
    """Ticks on whole numbers only (trial numbers, epochs), at most about ten of them."""
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(largest / 10)))
    return fig


def _hover(trial: FrozenTrial, config: StudyConfig) -> str:
    return f"trial {trial.number} ({backbone_of(trial, config)})"


# ---------------------------------------------------------------- figures


def history_figure(data: ReportData) -> go.Figure:
    data.require_completed()
    fig = optuna.visualization.plot_optimization_history(data.study, target_name=data.metric)
    return _whole_number_ticks(fig, max(t.number for t in data.trials))


def learning_curves_figure(data: ReportData) -> go.Figure:
    """Every trial's per-epoch validation metric, one trace per final state (pruned dotted)."""
    curves = [t for t in data.trials if t.intermediate_values]
    if not curves:
        raise Unavailable("no trial has reported a validation epoch yet")
    fig = go.Figure()
    for state in sorted({t.state for t in curves}, key=lambda s: s.value):
        x: list[int | None] = []
        y: list[float | None] = []
        text: list[str] = []
        for t in (t for t in curves if t.state == state):
            steps = sorted(t.intermediate_values)
            # A None between two trials breaks the line, so one trace holds them all.
            x += [*steps, None]
            y += [*(t.intermediate_values[s] for s in steps), None]
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
    return _whole_number_ticks(fig, max(max(t.intermediate_values) for t in curves))


def importances_figure(data: ReportData) -> go.Figure:
    done = data.require_completed(2)
    if len({t.value for t in done}) < 2:
        raise Unavailable(f"every completed trial scored the same {data.metric}")
    shared = set.intersection(*(set(t.params) for t in done))
    varied = sorted(n for n in shared if len({repr(t.params[n]) for t in done}) > 1)
    if not varied:
        raise Unavailable("the completed trials all used the same parameter values")
    return optuna.visualization.plot_param_importances(
        data.study, params=varied, target_name=data.metric
    )


def parallel_figure(data: ReportData) -> go.Figure:
    data.require_completed()
    return optuna.visualization.plot_parallel_coordinate(data.study, target_name=data.metric)


def backbone_figure(data: ReportData) -> go.Figure:
    """The validation metric of the completed trials, one box per backbone."""
    groups: dict[str, list[FrozenTrial]] = {}
    for t in data.require_completed():
        groups.setdefault(backbone_of(t, data.config), []).append(t)
    fig = go.Figure()
    for name, trials in sorted(groups.items()):
        fig.add_trace(
            go.Box(
                y=[t.value for t in trials],
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
            if t.state == state and t.value is not None and duration_of(t) is not None
        ]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[d for d, _ in points],
                y=[t.value for _, t in points],
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
)
TEST_FIGURES: tuple[tuple[str, Builder], ...] = (
    ("Confusion matrix on the held-out test split", confusion_figure),
)

# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
section.figure { margin: 1.5rem 0; }
.placeholder { border: 1px dashed #bbb; background: #fafafa; color: #666; padding: 2rem;
  text-align: center; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; }
"""


@dataclass(frozen=True)
class Rendered:
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


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
        return f'<td class="num">{text}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _describe_range(value: Any) -> str:
    """A search-space entry as a person writes it: ``1e-4..1e-2 (log)``, ``64 | 128``."""
    if isinstance(value, dict):
        text = f"{value.get('low')}..{value.get('high')}"
        if value.get("step"):
            text += f" step {value['step']}"
        return text + (" (log)" if value.get("log") else "")
    if isinstance(value, list):
        return " | ".join(str(v) for v in value)
    return str(value)


def header_html(data: ReportData, storage: str) -> str:
    """Study name, storage, objective and trial counts by state."""
    study, config = data.study, data.config
    counts: dict[str, int] = {}
    for t in data.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    by_state = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none yet"
    budget = study.user_attrs.get(BUDGET_ATTR, config.trials)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        f"<h1>Study {html.escape(study.study_name)}</h1>\n"
        f'<p class="meta">{html.escape(storage)} &middot; report written {now}</p>\n'
        f"<p>Objective: <b>{html.escape(data.metric)}</b> on the validation split "
        f"({html.escape(config.objective.direction)}). Trials: {len(data.trials)} of a budget "
        f"of {budget} ({by_state}).</p>"
    )


def best_trial_html(data: ReportData) -> str:
    """The best trial's value, duration and configuration (its recorded TrialConfig)."""
    try:
        best = data.study.best_trial
    except ValueError:
        return "<h2>Best trial</h2>\n<p>No completed trial yet.</p>"
    trial_config = best.user_attrs.get(TRIAL_CONFIG_ATTR) or best.params
    seconds = duration_of(best)
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    return (
        f"<h2>Best trial</h2>\n<p>Trial {best.number}: {html.escape(data.metric)} "
        f"<b>{best.value:.4f}</b>{took}.</p>\n"
        + _table(("parameter", "value"), sorted(trial_config.items()))
    )


def config_html(data: ReportData) -> str:
    """A summary of the study config, with the whole config folded away below it."""
    config = data.config
    space = "; ".join(f"{n} {_describe_range(p.to_yaml())}" for n, p in config.space.params)
    rows = [
        ("backbones", ", ".join(config.space.backbones)),
        ("search space", space),
        (
            "data",
            f"{config.data.split} split, seed {config.data.seed}, {config.data.image_size} px",
        ),
        (
            "training",
            f"up to {config.training.epochs} epochs, early stopping patience "
            f"{config.training.early_stopping_patience}",
        ),
        ("weights", config.weights),
        ("sampler / pruner", f"{config.sampler.name} / {config.pruner.name}"),
    ]
    full = yaml.safe_dump(data.study.user_attrs.get(CONFIG_ATTR, {}), sort_keys=False)
    return (
        "<h2>Study config</h2>\n"
        + _table(("setting", "value"), rows)
        + f"\n<details><summary>full config</summary><pre>{html.escape(full)}</pre></details>"
    )


def held_out_html(result: dict[str, Any]) -> str:
    """The train-best summary line and per-class metrics table."""
    test = result.get("test") or {}
    spread = ""
    if result.get("test_accuracy_std"):
        spread = (
            f" (mean {result.get('test_accuracy_mean', 0):.4f} "
            f"&plusmn; {result['test_accuracy_std']:.4f} over seeds)"
        )
    rows = [
        (name, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support"))
        for name, m in (test.get("per_class") or {}).items()
    ]
    macro = test.get("macro_f1")
    return (
        "<h2>Held-out test (train-best)</h2>\n"
        f"<p>Trial {html.escape(str(result.get('trial')))} retrained and evaluated once on "
        f"{html.escape(str(result.get('test_images', '?')))} test images: accuracy "
        f"<b>{test.get('accuracy', float('nan')):.4f}</b>{spread}"
        + (f", macro F1 <b>{macro:.4f}</b>" if isinstance(macro, int | float) else "")
        + ".</p>\n"
        + '<div class="per-class">'
        + _table(("class", "precision", "recall", "F1", "support"), rows)
        + "</div>"
    )


def build_report(data: ReportData, storage: str) -> tuple[str, int, int]:
    """The whole page, the number of figures drawn and the number of placeholders."""
    sections = [header_html(data, storage), best_trial_html(data), config_html(data)]
    sections.append("<h2>Search</h2>")
    figures = [render_figure(title, builder, data) for title, builder in SEARCH_FIGURES]
    sections += [f.html for f in figures]
    if data.train_best:
        sections.append(held_out_html(data.train_best))
        test_figures = [render_figure(title, builder, data) for title, builder in TEST_FIGURES]
        sections += [f.html for f in test_figures]
        figures += test_figures
    drawn = sum(f.drawn for f in figures)
    title = html.escape(f"tumor-search report: {data.study.study_name}")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script>{get_plotlyjs()}</script>\n</head>\n"
        f'<body data-figures="{drawn}" data-placeholders="{len(figures) - drawn}">\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    return page, drawn, len(figures) - drawn


def write_report(study_name: str, storage_url: str | None, out: Path) -> str:
    """Write the study's HTML report to `out` (atomically) and say what it holds.

    Args:
        study_name: The study to report on.
        storage_url: Its storage (None: the environment's or the default).
        out: The HTML file to write.

    Returns:
        A short summary such as ``"7 figures"`` or ``"4 figures, 2 placeholders"``.

    Raises:
        InputError: the storage or the study cannot be opened.
    """
    study, config = open_study(study_name, storage_url)
    data = ReportData(study, config, tuple(study.get_trials(deepcopy=False)))
    page, drawn, missing = build_report(data, describe_storage(storage_url))
    atomic_write_bytes(out, page.encode("utf-8"))
    summary = f"{drawn} figure{'s' if drawn != 1 else ''}"
    if missing:
        summary += f", {missing} placeholder{'s' if missing != 1 else ''}"
    return summary
