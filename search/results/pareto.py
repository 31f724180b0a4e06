"""A multi-objective study (``objective.metrics``) has a Pareto front, not one best trial:
the completed feasible trials that no other trial beats on every objective. What `status`,
`run`, `export --pareto` and the report show of it."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal completed trials that meet every constraint, by trial number
    (Optuna's `best_trials` leaves infeasible trials out)."""
    return sorted(study.best_trials, key=lambda t: t.number)


def front_rows(study: optuna.Study, names: list[str]) -> list[dict[str, Any]]:
    """The front as plain rows (``export --pareto``, ``status --json``)."""
    return [
        {
            "trial": t.number,
            "values": dict(zip(names, t.values, strict=True)),
            "trial_config": t.user_attrs.get("trial_config"),
        }
        for t in front(study)
    ]


def front_table(study: optuna.Study, names: list[str]) -> str:
    """The front as a text table: trial number, then one column per objective."""
    rows = front(study)
    if not rows:
        return "  (no completed feasible trial yet)"
    width = max(12, *(len(n) for n in names))
    head = "trial  " + "  ".join(f"{n:>{width}}" for n in names) + "  backbone"
    lines = [head]
    for t in rows:
        cells = "  ".join(f"{v:>{width}.4f}" for v in t.values)
        backbone = (t.user_attrs.get("trial_config") or t.params).get("backbone", "?")
        lines.append(f"{t.number:>5}  {cells}  {backbone}")
    return "\n".join(lines)


def front_summary(study: optuna.Study) -> str:
    """``front of 3 trials (2, 5, 7)`` for progress lines; says so when there is none yet."""
    trials = front(study)
    if not trials:
        return "no feasible trial on the front yet"
    numbers = ", ".join(str(t.number) for t in trials[:8]) + (", ..." if len(trials) > 8 else "")
    return f"front of {len(trials)} trial{'s' if len(trials) != 1 else ''} ({numbers})"
