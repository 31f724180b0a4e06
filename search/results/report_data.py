"""What the report reads: the study, its config and its trials, loaded once, and the trial
facts (backbone, duration) that both the figures and the tables show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.config import StudyConfig
from search.runtime.study import TRIAL_CONFIG_ATTR

TRAIN_BEST_ATTR = "train_best"


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
    def multi(self) -> bool:
        """Whether the study has several objectives (a Pareto front, not one best trial)."""
        from search.results.pareto import is_multi

        return is_multi(self.study)

    def score(self, trial: FrozenTrial) -> float | None:
        """The trial's `metric`: its value, or in a multi-objective study that objective's."""
        if trial.values is None:
            return None
        if len(trial.values) == 1:
            return trial.values[0]
        return trial.values[self.config.objective.names.index(self.metric)]

    @property
    def target(self) -> Callable[[FrozenTrial], float] | None:
        """What Optuna's plots should draw: None (the value) unless the study has several."""
        return (lambda t: float(self.score(t))) if self.multi else None  # type: ignore[arg-type]

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
