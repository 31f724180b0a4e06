"""`tumor-search finalize`: re-score the top trials by K-fold cross-validation, pick one.

A search ranks trials on one small validation split, so the best of many trials is partly
the luckiest. `finalize` re-trains the top N completed feasible trials with stratified
K-fold cross-validation over train+val (copies of an image kept within one fold; the test
split is never read) and picks the best mean fold score. It also records the winner's
epoch count (the median of its folds' best epochs, rounded up), which `train-best --refit`
trains for, and the winner's out-of-fold logits, which train-best calibrates on.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from common.progress import log
from search.errors import InputError
from search.results.export import feasible_ranked, trial_config_of
from search.results.folds import (
    Fold,
    check_folds,
    group_ids,
    make_folds,
    pool_labels,
    pool_paths,
)
from search.results.study_note import save_section
from search.runtime.study import COUNTS_ATTR, FINALIZE_ATTR, FINGERPRINT_ATTR, OOF_ATTR, open_study
from search.study_data import check_matches, load_train_val, prepare

NOTE_HEADING = "## Finalize"
EPOCHS_RULE = "median of the winner's folds' best epochs, rounded up"
LOGIT_DECIMALS = 5


def rule_text(metric: str, folds: int, top: int) -> str:
    return f"best mean {metric} over {folds}-fold CV of the top {top} trials"


@dataclass
class Finalist:
    """One re-scored trial: its fold scores, best epochs and out-of-fold logits."""

    trial: FrozenTrial
    scores: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    logits: np.ndarray | None = None
    pace: list[dict[str, float]] = field(default_factory=list)  # per fold: `fold_pace`

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores, ddof=1)) if len(self.scores) > 1 else 0.0

    def record(self) -> dict[str, Any]:
        return {
            "trial": self.trial.number,
            "value": self.trial.value,
            "mean": self.mean,
            "std": self.std,
            "scores": list(self.scores),
            "best_epochs": list(self.best_epochs),
            "pace": list(self.pace),
        }


def check_arguments(top: int, folds: int) -> None:
    """Refuse --top or --folds out of range before anything is loaded (`InputError`)."""
    if top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    if folds < 2:
        raise InputError(f"--folds must be at least 2, got {folds}")


def finalists_of(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The top `top` completed feasible trials, best first (`InputError` when none)."""
    if len(study.directions) > 1:
        raise InputError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; finalize "
            "ranks single-objective studies only (export its Pareto front instead)"
        )
    ranked = feasible_ranked(study)
    if not ranked:
        raise InputError(
            f"study {study.study_name!r} has no completed feasible trial yet; nothing to finalize"
        )
    return ranked[:top]


def finalized_best(study: optuna.Study) -> bool:
    """Whether the study's finalize record is current: its finalists include today's best
    completed feasible trial (a search that went on after finalize may have found a better
    one, which only a new finalize weighs)."""
    final = study.user_attrs.get(FINALIZE_ATTR)
    ranked = feasible_ranked(study)
    if not isinstance(final, dict) or not ranked:
        return False
    return ranked[0].number in {f.get("trial") for f in final.get("finalists", [])}


def finalize(
    study_name: str,
    storage_url: str | None,
    data_dir: str | None = None,
    top: int = 5,
    folds: int = 5,
    prepared: Any = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Cross-validate the top trials, record the result on the study; the summary.
    `prepared`: the study's data already scanned by the caller (`run`). `deadline` (a
    time.time()): start no finalist, past the first two, that would not end by then.

    Raises:
        InputError, ConfigError, DataError: before any training starts.
    """
    from search.results.export import refuse_multi

    check_arguments(top, folds)
    study, config = open_study(study_name, storage_url)
    refuse_multi(study, "finalize ranks trials by one score")
    trials = finalists_of(study, top)
    configs = [trial_config_of(t, config) for t in trials]
    data = prepared if prepared is not None else prepare(config, data_dir)
    expected = study.user_attrs.get(FINGERPRINT_ATTR)
    check_matches(data, study_name, expected, study.user_attrs.get(COUNTS_ATTR))
    labels = pool_labels(data.manifest)
    groups = group_ids(pool_paths(data.manifest), data.manifest.kept_together)
    check_folds(folds, labels, groups, data.classes)  # before decoding anything
    fold_list = make_folds(labels, groups, folds, config.data.seed)
    train_val = load_train_val(data, config.data.image_size)
    from search.training.data_subsets import pool_arrays

    x, y = pool_arrays(train_val)
    if not np.array_equal(y, labels):
        raise RuntimeError("decoded labels differ from the manifest's order")
    log(
        f"finalize: {len(trials)} trial{'s' if len(trials) != 1 else ''} x {folds} folds over "
        f"{len(y)} train+val images ({config.objective.metric}, {config.objective.direction})"
    )
    finalists: list[Finalist] = []
    pace = FinalistPace()
    for trial, trial_config in zip(trials, configs, strict=True):
        if pace.stops_before(trial, deadline):
            break
        began = time.time()
        finalists.append(Finalist(trial))
        for fold in fold_list:
            _score_fold(finalists[-1], trial_config, config, train_val, x, y, fold, folds)
        pace.record(trial, time.time() - began)
    top = min(top, len(finalists))
    summary, oof = _summarise(finalists, config, folds, top, len(y), y)
    study.set_user_attr(OOF_ATTR, oof)  # first: a summary never names logits not yet written
    study.set_user_attr(FINALIZE_ATTR, summary)
    save_section(study, NOTE_HEADING, note_section(summary))
    from search.runtime.artifacts import store_of, upload

    payload = json.dumps(summary, indent=2).encode()
    upload(store_of(study), study, "finalize_summary.json", payload, "application/json")
    return summary


class FinalistPace:
    """How long a finalist's folds take, from those already scored: in proportion to the
    trial's own search time (a MobileNet finalist costs more than a small CNN's)."""

    def __init__(self) -> None:
        self.scored: list[tuple[float | None, float]] = []  # (trial's duration, folds' seconds)

    @staticmethod
    def _duration(trial: optuna.trial.FrozenTrial) -> float | None:
        return trial.duration.total_seconds() if trial.duration is not None else None

    def record(self, trial: optuna.trial.FrozenTrial, seconds: float) -> None:
        self.scored.append((self._duration(trial), seconds))

    def stops_before(self, trial: optuna.trial.FrozenTrial, deadline: float | None) -> bool:
        """Whether `trial`'s folds would end past `deadline` (a time.time()), saying so; never
        for the first two finalists."""
        if deadline is None or len(self.scored) < 2:
            return False
        expected = self.expected(trial)
        if time.time() + expected <= deadline:
            return False
        log(
            f"finalize: {len(self.scored)} finalists; trial {trial.number} (about "
            f"{expected:.0f}s) would end past --timeout, so it and the rest are left out"
        )
        return True

    def expected(self, trial: optuna.trial.FrozenTrial) -> float:
        """The seconds `trial`'s folds should take (0 before any finalist was scored)."""
        spent = sum(seconds for _, seconds in self.scored)
        durations = [d for d, _ in self.scored]
        duration = self._duration(trial)
        if duration and all(durations) and durations:
            return duration * spent / sum(d for d in durations if d)
        return spent / max(len(self.scored), 1)


def _score_fold(
    finalist: Finalist,
    trial_config: Any,
    config: Any,
    train_val: Any,
    x: np.ndarray,
    y: np.ndarray,
    fold: Fold,
    k: int,
) -> None:
    """Train one finalist on one fold, score its held-out part, keep its logits there."""
    from models.backend import release_models
    from search.training.callbacks import EpochRecorder
    from search.training.data_subsets import subset_train_val
    from search.training.fit import fit  # imports Keras: only once input is good

    number = finalist.trial.number
    tag = f"cv{fold.index + 1}of{k}"
    data = subset_train_val(train_val, x, y, fold.train, fold.held_out, tag)
    recorder = EpochRecorder(f"[trial {number} fold {fold.index + 1}/{k}]", config.training.epochs)
    start = time.perf_counter()
    seed = config.training.seed
    # The fold's model is dropped below, before the next fit: folds may share traced steps.
    result = fit(
        trial_config, config, data, recorder, seed=seed, need_model=False, reuse_steps=True
    )
    logits = result.val_logits(data.x_val, trial_config.batch_size)
    if finalist.logits is None:
        finalist.logits = np.zeros((len(y), logits.shape[1]), dtype=np.float32)
    finalist.logits[fold.held_out] = np.asarray(logits, dtype=np.float32)
    finalist.scores.append(float(result.best_value))
    finalist.best_epochs.append(int(result.best_epoch))
    seconds = time.perf_counter() - start
    finalist.pace.append(
        fold_pace(recorder.epoch_seconds, seconds, len(data.y_train), len(data.y_val))
    )
    log(
        f"trial {number} fold {fold.index + 1}/{k}: {config.objective.metric} "
        f"{result.best_value:.4f}, best epoch {result.best_epoch}, {seconds:.1f}s"
    )
    del result
    release_models()


def refit_text(summary: dict[str, Any], bold: bool = False) -> str:
    """How long train-best's refit trains, and why: "15 epochs (training.refit_epochs; ...)"."""
    mark = "**" if bold else ""
    chosen = f"{summary['epochs_rule']}: {summary['epochs']}"
    asked = summary.get("refit_epochs")
    if asked:
        return f"{mark}{asked}{mark} epochs (training.refit_epochs; {chosen})"
    return f"{mark}{summary['epochs']}{mark} epochs ({summary['epochs_rule']})"


def fold_pace(
    epoch_seconds: list[float], seconds: float, images: int, held_out: int
) -> dict[str, float]:
    """How fast a fold trained, for train-best to plan a refit by (`retrain.refit_seconds`):
    its training and held-out images, a steady epoch's seconds (the median after the first,
    which also compiles; an epoch trains, then scores the held-out images) and the rest of
    the fold's seconds (build, compile, the held-out logits)."""
    steady = float(np.median(epoch_seconds[1:] or epoch_seconds)) if epoch_seconds else 0.0
    return {
        "images": float(images),
        "held_out": float(held_out),
        "epoch_s": round(steady, 4),
        "other_s": round(max(0.0, seconds - steady * len(epoch_seconds)), 4),
    }


def _winner(finalists: list[Finalist], direction: str) -> Finalist:
    """Best mean; a tie goes to the trial the search ranked higher."""
    sign = -1.0 if direction == "maximize" else 1.0
    order = sorted(range(len(finalists)), key=lambda i: (sign * finalists[i].mean, i))
    return finalists[order[0]]


def _summarise(
    finalists: list[Finalist], config: Any, folds: int, top: int, images: int, y: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``finalize`` and ``finalize_oof`` user attributes."""
    metric, direction = config.objective.metric, config.objective.direction
    winner = _winner(finalists, direction)
    summary = {
        "folds": folds,
        "top": top,
        "images": images,
        "metric": metric,
        "direction": direction,
        "seed": config.data.seed,
        "finalists": [f.record() for f in finalists],
        "winner": winner.trial.number,
        "epochs": int(math.ceil(float(np.median(winner.best_epochs)))),
        "epochs_rule": EPOCHS_RULE,
        "refit_epochs": config.training.refit_epochs,
        "rule": rule_text(metric, folds, top),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    assert winner.logits is not None
    oof = {
        "trial": winner.trial.number,
        "logits": np.round(winner.logits.astype(np.float64), LOGIT_DECIMALS).tolist(),
        "labels": [int(v) for v in y],
    }
    return summary, oof


def table(summary: dict[str, Any]) -> str:
    """The finalists, one line each, the winner marked with ``*``."""
    lines = [f"  {'trial':>5}  {'search':>8}  {'CV mean ± std':<17}  fold scores"]
    for f in summary["finalists"]:
        mark = "*" if f["trial"] == summary["winner"] else " "
        scores = " ".join(f"{s:.4f}" for s in f["scores"])
        search = f"{f['value']:.4f}" if f.get("value") is not None else "-"
        cv = f"{f['mean']:.4f} ± {f['std']:.4f}"
        lines.append(f"{mark} {f['trial']:>5}  {search:>8}  {cv:<17}  {scores}")
    return "\n".join(lines)


def note_section(summary: dict[str, Any]) -> str:
    """The dashboard note's section: the finalists table and the winner."""
    metric = summary["metric"]
    rows = [
        f"| {'**' if f['trial'] == summary['winner'] else ''}{f['trial']}"
        f"{'** (winner)' if f['trial'] == summary['winner'] else ''} | {f['value']} | "
        f"{f['mean']:.4f} ± {f['std']:.4f} | {', '.join(str(e) for e in f['best_epochs'])} |"
        for f in summary["finalists"]
    ]
    return (
        f"{NOTE_HEADING} ({summary['finished_at']})\n\n"
        f"Rule: {summary['rule']} ({summary['images']} train+val images, duplicate groups "
        f"kept within a fold; the test split is not read). Winner: trial **{summary['winner']}**, "
        f"refit for {refit_text(summary, bold=True)}.\n\n"
        f"| trial | search {metric} | CV {metric} (mean ± std) | best epochs |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
