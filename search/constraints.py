"""Limits a trial must meet to count: ``objective.constraints`` in the study config.

``min_recall: {glioma: 0.85}`` asks that the validation recall (sensitivity) of each named
class reach its floor at the trial's best epoch. A finished trial records each limit with
Optuna's ``trial.set_constraint(key, value)`` before it is told, as ``floor - recall`` (zero
or less is feasible), so that ``study.best_trial`` never returns an infeasible trial; pruned
and failed trials get none.

``max_latency_ms: 20``, ``max_params_m: 5`` and ``max_size_mb: 20`` cap what the trained
model costs to deploy (its footprint, measured after training: see `models.footprint`), as
``value - limit``. Unlike a second objective, a limit keeps the study single-objective, so
pruning still works.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from search.errors import ConfigError

# The upper limits on a trial's footprint, each with the user attribute it limits.
FOOTPRINT_LIMITS = {
    "max_latency_ms": "latency_ms",
    "max_params_m": "params_m",
    "max_size_mb": "size_mb",
}
CONSTRAINT_KINDS = ("min_recall", *FOOTPRINT_LIMITS)
RECALL_PREFIX = "val_recall/"  # epoch-log key of a class's validation recall
FEASIBLE_ATTR = "feasible"
CONSTRAINTS_ATTR = "constraints"


def validate_constraints(raw: Any) -> None:
    """Refuse a malformed ``objective.constraints`` mapping (`ConfigError`, one line).

    Class names are checked against the data later (`check_classes`).
    """
    if raw is None:
        return
    key = "objective.constraints"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {type(raw).__name__}")
    for kind, value in raw.items():
        if kind not in CONSTRAINT_KINDS:
            raise ConfigError(
                f"unknown key {key}.{kind}; allowed keys: {', '.join(CONSTRAINT_KINDS)}"
            )
        if kind in FOOTPRINT_LIMITS:
            if not _number(value) or not 0.0 < float(value) < math.inf:
                raise ConfigError(f"{key}.{kind}: expected a positive number, got {value!r}")
            continue
        if not isinstance(value, Mapping) or not value:
            raise ConfigError(
                f"{key}.{kind} must map class names to recalls, e.g. {{glioma: 0.85}}"
            )
        for name, floor in value.items():
            if not isinstance(name, str) or not _number(floor) or not 0.0 < float(floor) <= 1.0:
                raise ConfigError(
                    f"{key}.{kind}.{name}: expected a recall in (0, 1], got {floor!r}"
                )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def min_recall(constraints: Mapping[str, Any] | None) -> dict[str, float]:
    """The recall floor of each class named under ``min_recall``."""
    return {str(k): float(v) for k, v in ((constraints or {}).get("min_recall") or {}).items()}


def check_classes(constraints: Mapping[str, Any] | None, classes: Iterable[str]) -> None:
    """Refuse a constraint on a class the data does not have (`ConfigError`, one line)."""
    known = list(classes)
    for name in min_recall(constraints):
        if name not in known:
            raise ConfigError(
                f"objective.constraints.min_recall: unknown class {name!r}; "
                f"the data's classes are {', '.join(known)}"
            )


def constraint_values(
    constraints: Mapping[str, Any] | None, metrics: Mapping[str, float]
) -> dict[str, float]:
    """Each limit's value (zero or less: met) from a trial's best-epoch metrics and its
    footprint (``latency_ms``, ``params_m``, ``size_mb``)."""
    out = {}
    for name, floor in min_recall(constraints).items():
        recall = metrics.get(f"{RECALL_PREFIX}{name}")
        if recall is None or not math.isfinite(recall):
            recall = 0.0  # not measured: the limit is not shown to be met
        out[f"min_recall/{name}"] = round(floor - float(recall), 6)
    for kind, attr in FOOTPRINT_LIMITS.items():
        limit = (constraints or {}).get(kind)
        if limit is not None:
            value = metrics.get(attr)
            measured = value is not None and math.isfinite(value)
            out[kind] = round(float(value) - float(limit), 6) if measured else float(limit)
    return out


def apply_constraints(
    trial: Any, constraints: Mapping[str, Any] | None, metrics: Mapping[str, float]
) -> bool | None:
    """Record each limit on a finished trial (`trial.set_constraint`) and whether it is
    feasible (user attribute); None when the study has no constraints."""
    values = constraint_values(constraints, metrics)
    if not values:
        return None
    for key, value in values.items():
        trial.set_constraint(key, value)
    feasible = all(v <= 0.0 for v in values.values())
    trial.set_user_attr(CONSTRAINTS_ATTR, values)
    trial.set_user_attr(FEASIBLE_ATTR, feasible)
    return feasible


def is_feasible(trial: Any) -> bool:
    """Whether a (frozen) trial meets every limit recorded on it (a trial without limits
    does)."""
    return all(v <= 0.0 for v in trial.constraints.values())


def violations(trial: Any) -> list[str]:
    """The limits a trial breaks, as short texts (``min_recall/glioma +0.120``)."""
    return [f"{k} +{v:.3f}" for k, v in sorted(trial.constraints.items()) if v > 0.0]
