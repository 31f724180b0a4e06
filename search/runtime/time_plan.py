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

MAX_TOP = 5  # finalists when the time allows (more finalists before more folds)
FOLD_CHOICES = (3, 2)
DEFAULT_TOP, DEFAULT_FOLDS = 3, 3  # without a --timeout
FINALIZE_SETUP_SECONDS = 5.0  # finalize in run's process: data from the cache, folds made
SEARCH_SHARE = 0.5  # the search's share of --timeout at least, when the full finalize does not fit


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
    """The most finalists (then folds) whose fits end within `seconds`; None when not even
    the best trial with 2 folds fits, or when fewer than 2 trials completed (nothing to
    choose between)."""
    if len(ranked) < 2:
        return None
    for top in range(min(MAX_TOP, len(ranked)), 1, -1):
        for folds in FOLD_CHOICES:
            plan = plan_for(top, folds, ranked, val_fraction)
            if plan.seconds <= seconds:
                return plan
    return None


def stop_search(elapsed: float, timeout: float, ranked: list[float], val_fraction: float) -> bool:
    """Whether the search should start no more trials, `elapsed` seconds into a run whose
    --timeout is `timeout`, so that finalize fits in what is left.

    Stop when the full finalize (the top `MAX_TOP` trials, 3 folds) fits now but would not
    after one more trial of the mean duration: a long run searches as long as it can. When
    trials are too long for that, stop once the search has had `SEARCH_SHARE` of the time
    and a smaller finalize fits in the rest; when none fits then, search on to the end (run
    then skips finalize, and says so).
    """
    if len(ranked) < 2:
        return False
    left = timeout - elapsed
    next_trial = sum(ranked) / len(ranked)
    # The full finalize, counting trials yet to complete at the mean duration: with only two
    # trials done, it is not the small plan those two would need.
    padded = ranked[:MAX_TOP] + [next_trial] * max(MAX_TOP - len(ranked), 0)
    full = plan_for(MAX_TOP, FOLD_CHOICES[0], padded, val_fraction)
    if full.seconds <= left:
        return full.seconds > left - next_trial
    return (
        elapsed >= SEARCH_SHARE * timeout and finalize_plan(left, ranked, val_fraction) is not None
    )


def completed_durations(study: optuna.Study) -> list[float]:
    """The completed trials' durations in seconds, best value first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done = [t for t in done if t.value is not None and t.duration is not None]
    return [t.duration.total_seconds() for t in sorted(done, key=lambda t: sign * t.value)]
