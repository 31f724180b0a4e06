"""The report's HTML text: the header, the best trial, the study config and the held-out
test summary, with the small table helpers they share."""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Iterable
from typing import Any

import yaml

from models.footprint import describe
from search.results.report_data import ReportData, backbone_of, duration_of
from search.runtime.study import BUDGET_ATTR, CONFIG_ATTR, TRIAL_CONFIG_ATTR


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
        f"<p>{_objective(config)} Trials: {len(data.trials)} of a budget "
        f"of {budget} ({by_state}).</p>"
    )


def _objective(config: Any) -> str:
    goal = config.objective
    if not goal.is_multi:
        return (
            f"Objective: <b>{html.escape(goal.metric)}</b> on the validation split "
            f"({html.escape(goal.direction)})."
        )
    pairs = zip(goal.names, goal.directions, strict=True)
    return "Objectives: " + ", ".join(f"<b>{html.escape(n)}</b> ({d})" for n, d in pairs) + "."


def best_trial_html(data: ReportData) -> str:
    """The best trial's value, duration and configuration (its recorded TrialConfig)."""
    infeasible = infeasible_html(data)
    if data.multi:
        return front_html(data) + infeasible
    try:
        best = data.study.best_trial
    except ValueError:
        none = "No feasible trial yet." if data.completed else "No completed trial yet."
        return f"<h2>Best trial</h2>\n<p>{none}</p>\n{infeasible}"
    trial_config = best.user_attrs.get(TRIAL_CONFIG_ATTR) or best.params
    seconds = duration_of(best)
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    footprint = describe(best.user_attrs)
    costs = f'<p class="footprint">{html.escape(footprint)}.</p>\n' if footprint else ""
    return (
        f"<h2>Best trial</h2>\n<p>Trial {best.number}: {html.escape(data.metric)} "
        f"<b>{best.value:.4f}</b>{took}.</p>\n{costs}"
        + _table(("parameter", "value"), sorted(trial_config.items()))
        + infeasible
    )


def front_html(data: ReportData) -> str:
    """A multi-objective study's Pareto front: each trial's objectives and backbone."""
    from search.results.pareto import front

    names = data.config.objective.names
    trials = front(data.study)
    if not trials:
        none = "No feasible trial yet." if data.completed else "No completed trial yet."
        return f"<h2>Pareto front</h2>\n<p>{none}</p>\n"
    rows = [
        (t.number, *(round(v, 4) for v in t.values), backbone_of(t, data.config)) for t in trials
    ]
    return (
        f"<h2>Pareto front</h2>\n<p>{len(trials)} trial{'s' if len(trials) != 1 else ''} that no "
        f"other trial beats on every objective ({html.escape(', '.join(names))}); export one "
        "with <code>tumor-search export --trial N</code>.</p>\n"
        + _table(("trial", *names, "backbone"), rows).replace("<table>", '<table class="front">', 1)
    )


def infeasible_html(data: ReportData) -> str:
    """The completed trials that break a constraint (never best), with what they break."""
    from search.constraints import violations

    rows = [(t.number, f"{data.score(t):.4f}", ", ".join(violations(t))) for t in data.completed]
    rows = [r for r in rows if r[2]]
    if not rows:
        return ""
    return (
        f'<h3>Infeasible trials</h3>\n<p class="infeasible">{len(rows)} completed trial'
        f"{'s break' if len(rows) != 1 else ' breaks'} a constraint of the objective and "
        "cannot be best.</p>\n" + _table(("trial", data.metric, "breaks"), rows)
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
        + "</div>\n"
        + intervals_html(result)
    )


def _ci(interval: dict[str, Any] | None) -> tuple[Any, str]:
    """An interval record as (value, "lower to upper")."""
    interval = interval or {}
    lower, upper = interval.get("lower"), interval.get("upper")
    span = f"{lower:.4f} to {upper:.4f}" if lower is not None and upper is not None else "n/a"
    return interval.get("value"), span


def intervals_html(result: dict[str, Any]) -> str:
    """The test metrics with their bootstrap 95 % intervals, per-class sensitivity,
    specificity and F1 with theirs, and the calibration (temperature, ECE and Brier score)."""
    ci = result.get("intervals")
    if not ci:
        return ""
    names = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))
    rows = [(label, *_ci(ci.get(key))) for key, label in (*names, ("macro_f1", "macro F1"))]
    per_class = [
        (name, *_ci(m.get("sensitivity")), *_ci(m.get("specificity")), *_ci(m.get("f1")))
        for name, m in (ci.get("per_class") or {}).items()
    ]
    text = (
        f"<p>95 % intervals: {html.escape(str(ci.get('method', 'bootstrap')))}, "
        f"{ci.get('resamples', '?')} resamples.</p>\n"
        + '<div class="intervals">'
        + _table(("metric", "value", "95 % CI"), rows)
        + _table(
            ("class", "sensitivity (recall)", "95 % CI", "specificity", "95 % CI", "F1", "95 % CI"),
            per_class,
        )
        + "</div>"
    )
    cal = result.get("calibration") or {}
    test = cal.get("test") or {}
    if test:
        fitted = cal.get("fitted_on")
        why = html.escape(str(cal.get("reason") or ""))
        head = (
            f"Temperature scaling: T = {cal.get('temperature', 1.0):.3f}, fitted on the "
            f"{html.escape(str(fitted))}" + (f", {why}" if why else "")
            if cal.get("applied", bool(fitted))
            else "Not calibrated (T = 1)"
            + (f": {why.removeprefix('not applied: ')}" if why else "")
        )
        measures = [("ECE", "ece"), ("Brier", "brier"), ("NLL", "nll")]
        changes = ", ".join(
            f"{label} {test[f'{key}_before']:.4f} &rarr; {test[f'{key}_after']:.4f}"
            for label, key in measures
            if f"{key}_before" in test
        )
        text += f'\n<p class="calibration">{head}; test {changes}.</p>'

    return text
