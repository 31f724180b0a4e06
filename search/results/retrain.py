"""train-best's refit: the exported configuration trained on train+val together.

When best.json carries a finalize result, the configuration and its epoch count were chosen
by cross-validation; the validation split then has no choosing left to do, and the final
model trains on it too, for exactly the epochs finalize chose, then is tested once. With no
validation data there is no score to choose among seeds by: the first seed's model is kept.

`training.refit_epochs` asks for a longer refit than finalize's folds (the search's trials
are short proxies: on phantoms a textbook small_cnn tested 0.963 after 6 epochs on
train+val, 0.988 after 15). With a deadline (`train-best --timeout`) the refit takes the
epochs that fit by the pace finalize measured on the winner's folds, else by its trial's
(`refit_plan`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.progress import log
from search.errors import InputError
from search.training.batching import predict

# Scoring an image in a fold's epoch costs about this share of training on one (forward only;
# 2 CPU cores, small_cnn at 64 px: a 2-fold epoch of 800 + 800 images took 2.7 s, a refit
# epoch of 1,600 training images 3.4 s).
VALIDATION_COST = 0.5
# train-best's work after the refit: the test predictions, metrics with bootstrap intervals,
# calibration, model.keras, Grad-CAM examples, the model card and the study's record (on 2
# CPU cores, phantoms at 64 px: `train-best --timeout 60` ended after 51 s with this).
AFTER_REFIT_S = 10.0


@dataclass(frozen=True)
class RefitPlan:
    """How many epochs the refit trains, and why."""

    epochs: int
    rule: str


def refit_seconds(pace: list[dict[str, float]], images: int, epochs: int) -> float | None:
    """A refit's expected seconds on `images` images for `epochs` epochs, from the folds'
    pace (`finalize.fold_pace`): their other seconds, and a steady epoch scaled by images
    (a fold's held-out images at `VALIDATION_COST`). None without a usable pace (a finalize
    record from before paces were kept)."""
    steady = [
        p["epoch_s"] * images / (p["images"] + VALIDATION_COST * p.get("held_out", 0.0))
        for p in pace
        if p.get("images", 0) > 0
    ]
    if not steady:
        return None
    other = float(np.median([p.get("other_s", 0.0) for p in pace]))
    return other + epochs * float(np.median(steady))


def refit_plan(
    payload: dict[str, Any], config: Any, train_val: Any, seeds: int, deadline: float | None
) -> RefitPlan:
    """The refit's epochs: `training.refit_epochs`, else finalize's count; with a deadline
    (`time.time()`), no more than fit before it for `seeds` refits, by the pace of the
    winner's folds (else of its trial)."""
    chosen = finalize_epochs(payload)
    asked = config.training.refit_epochs or chosen
    assert asked is not None  # wants_refit said so
    if not config.training.refit_epochs:
        rule = str(payload["finalize"].get("epochs_rule"))
    elif chosen is None:
        rule = "training.refit_epochs; no finalize result: the trial best on the validation split"
    else:
        rule = f"training.refit_epochs; finalize's folds chose {chosen}"
    if deadline is None:
        return RefitPlan(asked, rule)
    images = len(train_val.y_train) + len(train_val.y_val)
    final = payload.get("finalize") if chosen is not None else None
    pace, source = next(
        ((f["pace"], "its finalize folds'") for f in (final or {}).get("finalists", [])
         if f.get("trial") == final.get("winner") and f.get("pace")),
        (payload.get("pace") or [], "its trial's"),
    )  # fmt: skip
    left = (deadline - time.time() - AFTER_REFIT_S) / max(seeds, 1)
    base, one = refit_seconds(pace, images, 0), refit_seconds(pace, images, 1)
    if base is None or one is None:
        log("train-best --timeout: the export records no pace to plan the refit by")
        return RefitPlan(asked, rule)
    per_epoch = one - base
    fits = asked if per_epoch <= 0 else int(min(asked, max(1, (left - base) // per_epoch)))
    if fits >= asked:
        return RefitPlan(asked, rule)
    log(
        f"train-best --timeout: {fits} of {asked} refit epochs fit in the {max(left, 0):.0f}s "
        f"left (all {asked} would take about {math.ceil(base + asked * per_epoch)}s at "
        f"{source} pace)"
    )
    return RefitPlan(fits, f"{rule}; {fits} of {asked} fit in --timeout")


def finalize_epochs(payload: dict[str, Any]) -> int | None:
    """The epoch count finalize chose for the exported trial; None without a finalize result."""
    final = payload.get("finalize")
    if not isinstance(final, dict) or final.get("winner") != payload.get("trial"):
        return None
    epochs = final.get("epochs")
    return epochs if isinstance(epochs, int) and epochs >= 1 else None


def wants_refit(payload: dict[str, Any], refit: bool | None, source: str, config: Any) -> bool:
    """Whether to refit: as asked, else when the epoch count is known, from the export's
    finalize result or the config's `training.refit_epochs`.

    Raises:
        InputError: --refit asked with neither.
    """
    known = finalize_epochs(payload) is not None or bool(config.training.refit_epochs)
    if refit is None:
        return known
    if refit and not known:
        raise InputError(
            f"--refit needs a finalize result or training.refit_epochs and {source} has "
            f"neither: run `tumor-search finalize --study {payload.get('study')}`, export "
            "again, or leave out --refit"
        )
    return refit


def refit_seeds(
    config: Any, trial_config: Any, train_val: Any, test: Any, seeds: int, epochs: int
) -> tuple[list[dict[str, Any]], Any, int]:
    """Refit once per seed on train+val for `epochs` epochs (`refit_plan`), test each model
    once; the runs, and the first seed's model (and its index 0)."""
    from search.results.evaluation import classification_metrics
    from search.training.callbacks import EpochRecorder
    from search.training.refit import refit  # imports Keras: only once input is good

    classes = list(train_val.classes)
    runs: list[dict[str, Any]] = []
    kept = None
    for i in range(seeds):
        seed = config.training.seed + i
        recorder = EpochRecorder(f"[refit seed {seed}]", epochs)
        result = refit(trial_config, config, train_val, recorder, epochs, seed=seed)
        probs = predict(result.model, test.x, trial_config.batch_size)
        metrics = classification_metrics(test.y, probs.argmax(axis=1), classes)
        runs.append(
            {"seed": seed, "epochs": result.epochs_run, "images": result.images, "test": metrics}
        )
        log(
            f"[refit seed {seed}] {result.epochs_run} epochs on {result.images} train+val images, "
            f"test accuracy {metrics['accuracy']:.4f}"
        )
        if kept is None:
            kept = result.model
    return runs, kept, 0


def training_record(
    payload: dict[str, Any], config: Any, train_val: Any, plan: RefitPlan | None, seeds: int
) -> dict[str, Any]:
    """What metrics.json says about how the model was chosen and trained."""
    n_train, n_val = len(train_val.y_train), len(train_val.y_val)
    chosen_by = payload.get("selected_by") or (
        f"best {payload.get('metric', config.objective.metric)} on the validation split"
    )
    record: dict[str, Any] = {"trial_selected_by": chosen_by, "refit": plan is not None}
    if plan is None:
        record["trained_on"] = {
            "splits": ["train"],
            "images": n_train,
            "validation_images": n_val,
            "epochs": f"up to {config.training.epochs}, best validation epoch kept",
        }
        return record
    record["trained_on"] = {
        "splits": ["train", "val"],
        "images": n_train + n_val,
        "validation_images": 0,
        "epochs": plan.epochs,
        "epochs_rule": plan.rule,
    }
    record["selected_by"] = (
        "the first seed: a refit has no validation data to choose by"
        if seeds > 1
        else "the only seed (refit on train+val)"
    )
    return record
