"""How `run` shares its --timeout between the search and the finalize that ends it.

`run` finishes a single-objective study with `finalize` (cross-validated selection among
the best trials), so that `export` and `train-best` use the robust choice without the user
asking. With a --timeout, the search stops starting trials early enough for finalize to fit:
finalize's cost is known from the completed trials' durations (`fold_seconds`). Without a
--timeout, finalize re-scores the top `DEFAULT_TOP` trials with `DEFAULT_FOLDS` folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

MAX_TOP = 5  # finalists when the time allows
FOLD_CHOICES = (3, 2)
DEFAULT_TOP, DEFAULT_FOLDS = 3, 3  # without a --timeout
FINALIZE_SETUP_SECONDS = 5.0  # finalize in run's process: data from the cache, folds made
FINALIZE_SHARE = 0.5  # the most of --timeout the search leaves for finalize


@dataclass(frozen=True)
class FinalizePlan:
    """Finalize's size and its expected seconds."""

    top: int
    folds: int
    seconds: float


def fold_seconds(trial_seconds: float, folds: int, val_fraction: float) -> float:
    """One fold's fit: (K-1)/K of train+val, where a trial fitted the train split alone, but
    never less than the trial took: building and compiling a model (a good part of a short
    trial) do not shrink with the images. Measured on 2 CPU cores (bench-peer, 64 px): a
    2-fold fit took 32 s for a 30 s trial, where the image count alone predicts 18 s."""
    images = (folds - 1) / folds / (1.0 - val_fraction)
    return trial_seconds * max(images, 1.0)


def plan_for(top: int, folds: int, ranked: list[float], val_fraction: float) -> FinalizePlan:
    """The plan for the `top` best trials (`ranked`: completed durations, best first)."""
    fits = sum(folds * fold_seconds(d, folds, val_fraction) for d in ranked[:top])
    return FinalizePlan(min(top, len(ranked)), folds, FINALIZE_SETUP_SECONDS + fits)


def finalize_plan(seconds: float, ranked: list[float], val_fraction: float) -> FinalizePlan | None:
    """The plan whose fits end within `seconds`: 3 folds before 2, then the most finalists
    (finalize adds more while they fit, not more folds); None when not even the best two
    trials with 2 folds fit, or when fewer than 2 trials completed (nothing to choose
    between)."""
    if len(ranked) < 2:
        return None
    for folds in FOLD_CHOICES:
        for top in range(min(MAX_TOP, len(ranked)), 1, -1):
            plan = plan_for(top, folds, ranked, val_fraction)
            if plan.seconds <= seconds:
                return plan
    return None


def reserved_plan(timeout: float, ranked: list[float], val_fraction: float) -> FinalizePlan | None:
    """The finalize a search of `timeout` seconds leaves room for: the `finalize_plan` whose
    fits take at most `FINALIZE_SHARE` of it, counting trials not yet completed
    at the mean duration (with two trials done, the plan is not the small one those two
    need). None when not even 2 trials x 2 folds fit in that share."""
    if not ranked:
        return None
    mean = sum(ranked) / len(ranked)
    padded = ranked[:MAX_TOP] + [mean] * max(MAX_TOP - len(ranked), 0)
    return finalize_plan(FINALIZE_SHARE * timeout, padded, val_fraction)


def stop_search(elapsed: float, timeout: float, ranked: list[float], val_fraction: float) -> bool:
    """Whether the search should start no more trials, `elapsed` seconds into a run whose
    --timeout is `timeout`, so that finalize fits in what is left.

    The search leaves room for `reserved_plan` (the full finalize, the top `MAX_TOP` trials
    by 3 folds, where it fits in `FINALIZE_SHARE` of the time; a smaller one where trials
    are longer) and stops when one more trial of the mean duration would leave it none: a
    run searches as long as it can. When trials are too long for any finalize in that share,
    it searches to the end (run then skips finalize, and says so). Finalize itself adds
    finalists while they fit (`finalize(..., deadline=)`), so a cautious estimate here
    leaves less of the time idle.
    """
    if len(ranked) < 2:
        return False
    plan = reserved_plan(timeout, ranked, val_fraction)
    if plan is None:
        return False
    next_trial = sum(ranked) / len(ranked)
    return plan.seconds > timeout - elapsed - next_trial


def completed_durations(study: optuna.Study) -> list[float]:
    """The completed trials' durations in seconds, best value first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done = [t for t in done if t.value is not None and t.duration is not None]
    return [t.duration.total_seconds() for t in sorted(done, key=lambda t: sign * t.value)]
