"""The ``objective`` section of a study config: what a trial is scored on (one metric, or
several for a multi-objective study) and the limits a trial must meet to count.

```yaml
objective:
  metric: val_accuracy                  # one of METRICS; or, instead:
  # metrics: [val_accuracy, latency_ms] # a multi-objective study: a Pareto front, no pruning
  constraints: {min_recall: {glioma: 0.85}, max_latency_ms: 20}
```
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ValidationInfo, field_validator, model_validator

from search.config_base import Section, one_of, refuse
from search.errors import ConfigError

# The metrics on the validation split, and the direction that is better.
METRICS = {
    "val_accuracy": "maximize",
    "balanced_accuracy": "maximize",
    "macro_f1": "maximize",
    "val_loss": "minimize",
}
# The key each metric has in Keras' epoch logs (balanced accuracy and macro F1 are added by
# search.training.val_metrics.ValidationMetrics).
MONITORS = {
    "val_accuracy": "val_accuracy",
    "balanced_accuracy": "val_balanced_accuracy",
    "macro_f1": "val_macro_f1",
    "val_loss": "val_loss",
}
# What a trained model costs to deploy (models.footprint), measured after each trial: only
# in `metrics`, beside at least one validation metric. Smaller is better.
FOOTPRINT_METRICS = {"latency_ms": "minimize", "params_m": "minimize", "size_mb": "minimize"}
ALL_METRICS = {**METRICS, **FOOTPRINT_METRICS}
DEFAULT_METRIC = "val_accuracy"


class ObjectiveConfig(Section):
    """What a trial is scored on, and the limits a trial must meet to count.

    Attributes:
        metric: One of `METRICS`, measured on the validation split at the best epoch. In a
            multi-objective study, one of `metrics` (by default the first validation metric
            listed: `with_primary_metric`); it picks the best epoch and drives early stopping.
        metrics: Two or more of `ALL_METRICS` for a multi-objective study (None: one metric).
        constraints: Limits a trial must meet to be feasible (infeasible trials are never
            best), e.g. ``{"min_recall": {"glioma": 0.85}, "max_latency_ms": 20}``; see
            `search.constraints`.
    """

    metric: Annotated[str, one_of(METRICS, "metric")] = DEFAULT_METRIC
    metrics: list | None = None
    constraints: dict | None = None

    @property
    def is_multi(self) -> bool:
        """Whether the study has several objectives (a Pareto front, not one best trial)."""
        return self.metrics is not None

    @property
    def names(self) -> list[str]:
        """The objectives' names, in the order of the study's values."""
        return list(self.metrics) if self.metrics is not None else [self.metric]

    @property
    def directions(self) -> list[str]:
        return [ALL_METRICS[name] for name in self.names]

    @property
    def direction(self) -> str:
        """The direction of `metric` (the validation metric that picks the best epoch)."""
        return METRICS[self.metric]

    @property
    def monitor(self) -> str:
        """`metric`'s key in Keras' epoch logs."""
        return MONITORS[self.metric]

    @property
    def needs_class_metrics(self) -> bool:
        """Whether each epoch must compute metrics Keras does not (balanced accuracy,
        macro F1, per-class recall)."""
        logged = [MONITORS[n] for n in self.names if n in MONITORS]
        return any(m not in ("val_accuracy", "val_loss") for m in logged) or bool(self.constraints)

    @model_validator(mode="before")
    @classmethod
    def _primary_metric(cls, raw: Any) -> Any:
        return with_primary_metric(raw)

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, names: list | None, info: ValidationInfo) -> list | None:
        """Two or more known metrics, none twice, one of them a validation metric that is
        `metric` (checked after `metric` itself)."""
        if names is None:
            return names
        if len(names) < 2:
            raise refuse(
                "a multi-objective study needs two or more metrics, e.g. "
                "[val_accuracy, latency_ms]; for one, set objective.metric instead"
            )
        for name in names:
            if not isinstance(name, str):
                raise refuse(f"expected metric names, got {name!r}")
            if name not in ALL_METRICS:
                raise refuse(f"unknown metric {name!r}; allowed: {', '.join(ALL_METRICS)}")
        if len(set(names)) < len(names):
            raise refuse(f"a metric is listed twice: {names}")
        if not any(name in METRICS for name in names):
            raise refuse(
                f"needs a validation metric ({', '.join(METRICS)}) beside {', '.join(names)}"
            )
        metric = info.data.get("metric")
        if metric is not None and metric not in names:
            raise refuse(
                "set objective.metric or objective.metrics, not both "
                f"(metric {metric!r} is not among metrics {names})",
                key="objective",
            )
        return names

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, constraints: dict | None) -> dict | None:
        from search.constraints import validate_constraints

        try:
            validate_constraints(constraints)
        except ConfigError as exc:
            raise refuse(str(exc), key="") from None
        return constraints


def with_primary_metric(raw: Any) -> Any:
    """A raw ``objective`` mapping with ``metrics`` and no ``metric``: ``metric`` becomes
    the first validation metric listed (it picks each trial's best epoch). An explicit
    ``metric`` stays, and must be one of ``metrics``."""
    if not isinstance(raw, dict) or "metric" in raw or not isinstance(raw.get("metrics"), list):
        return raw
    first = next((m for m in raw["metrics"] if isinstance(m, str) and m in METRICS), None)
    return raw if first is None else {**raw, "metric": first}
