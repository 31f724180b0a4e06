"""Training a TrialConfig on train+val together for a fixed number of epochs.

After `finalize` has chosen a configuration and its epoch count by cross-validation, the
validation split is better spent as training data: `refit` trains on both, with no
validation data, so there is no best epoch to restore and no early stopping; it stops after
exactly the epochs cross-validation chose. Under the default `training.lr_schedule: cosine`
the learning rate falls to about 0 over those epochs, so the last epoch, the model kept, does
not end on a swing of the weights (a from-scratch network's test accuracy moved by up to 0.35
between constant-rate epochs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.trial_config import TrialConfig
from search.config import StudyConfig
from search.study_data import TrainVal
from search.training.callbacks import EpochRecorder, schedule
from search.training.data_subsets import pool_arrays, subset_train_val
from search.training.fit import _trained_model, prepare_training


@dataclass
class RefitResult:
    """What `refit` produced: the whole model after its last epoch."""

    model: Any
    history: dict[str, list[float]]
    epochs_run: int
    images: int
    seconds: float
    params: dict[str, int]


def refit_data(train_val: TrainVal) -> TrainVal:
    """Train and validation as one training split, with an empty validation split."""
    x, y = pool_arrays(train_val)
    everything, nothing = np.arange(len(y)), np.arange(0)
    return subset_train_val(train_val, x, y, everything, nothing, "refit")


def refit(
    trial_config: TrialConfig,
    config: StudyConfig,
    train_val: TrainVal,
    recorder: EpochRecorder,
    epochs: int,
    seed: int | None = None,
) -> RefitResult:
    """Build a model for `trial_config` and train it on train+val for exactly `epochs` epochs.

    Args:
        trial_config: The model to build and the optimisation settings.
        config: The study config (weights, augmentation, class weights, ...; its epoch
            count and early stopping are not used).
        train_val: The study's train and validation splits; both are trained on.
        recorder: Records every epoch and prints one line each.
        epochs: How many epochs to train (the count cross-validation chose).
        seed: Seed for weights initialisation, shuffling and augmentation.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    start = time.perf_counter()
    data = refit_data(train_val)
    trainee, inputs = prepare_training(trial_config, config, data, seed)
    callbacks = [*schedule(config.training.lr_schedule, epochs), recorder]
    trainee.model.fit(**inputs, epochs=epochs, callbacks=callbacks, verbose=0)
    model, params = _trained_model(trainee, need_model=True)
    return RefitResult(
        model=model,
        history=recorder.history,
        epochs_run=recorder.epochs_run,
        images=len(data.y_train),
        seconds=time.perf_counter() - start,
        params=params,
    )
