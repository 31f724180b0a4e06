"""Fitting one TrialConfig on a study's train split, validated every epoch.

Shared by trials (with a pruning callback) and by `train-best` (with several seeds).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.backend import backend_name, configure_precision, keras_module, set_seed, use_xla
from models.builder import (
    build_training_state,
    compile_model,
    count_params,
    create_model,
    encode_targets,
)
from models.head import HEAD_NAME, build_head
from models.registry import get_backbone
from models.step_reuse import POOL, traced_fields
from models.trial_config import TrialConfig
from search.config import StudyConfig
from search.study_data import TrainVal
from search.training.batching import PaddedValidation, fit_inputs, fixed_shapes
from search.training.callbacks import BestWeights, EpochRecorder, schedule

keras = keras_module()


@dataclass
class FitResult:
    """What `fit` produced. `model` is the whole model (backbone and trained head); it is None
    when the head was trained on cached features and the caller did not ask for it."""

    model: Any
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    best_value: float
    epochs_run: int
    seconds: float
    seconds_per_epoch: float
    params: dict[str, int]
    feature_cache: dict[str, Any] = field(default_factory=dict)
    head: Any = None  # the head alone, when it was trained on cached features
    head_val: Any = None  # the cached features of the validation images the head scored

    def val_logits(self, x_val: np.ndarray, batch_size: int) -> np.ndarray:
        """The logits of the validation images `x_val`: by the head on their cached features when
        it trained on them (the same numbers as the whole model, without the backbone's
        cost), else by the whole model on their pixels."""
        from models.calibration import head_logits, logits_model
        from search.training.batching import predict

        if self.head is not None:
            if len(x_val) != len(self.head_val):
                raise ValueError("val_logits scores the fit's own validation images only")
            return predict(head_logits(self.head), self.head_val, batch_size)
        return predict(logits_model(self.model), x_val, batch_size)

    def val_classes(self, x_val: np.ndarray, batch_size: int) -> np.ndarray:
        """The predicted class of each validation image: as `val_logits` on a head trained on
        cached features; else by the whole model's own `predict_on_batch` in batches of one
        shape, whose traced step a trial's footprint (batch-1 calls) goes on to use, where
        `predict` would trace a step of its own (0.1 s a small_cnn, 0.6 s a MobileNetV3Small
        at 64 px on 2 cores)."""
        if self.head is not None:
            return self.val_logits(x_val, batch_size).argmax(axis=1)
        from search.training.batching import predict_on_batches

        return predict_on_batches(self.model, x_val, batch_size).argmax(axis=1)

    def metrics_at_best(self) -> dict[str, float]:
        return {
            key: values[self.best_epoch - 1]
            for key, values in self.history.items()
            if len(values) >= self.best_epoch
        }


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Weights n / (k * count) per class: scikit-learn's "balanced" (`compute_class_weight`),
    with k the number of classes, present or not; a class without images (whose weight no
    loss term uses) weighs as if it had one."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y)
    present = np.unique(y)
    weights = dict.fromkeys(range(n_classes), len(y) / float(n_classes))
    if len(present):
        # sklearn divides by the number of classes present; scale that to all n_classes.
        found = compute_class_weight("balanced", classes=present, y=y) * len(present) / n_classes
        weights.update({int(c): float(w) for c, w in zip(present, found, strict=True)})
    return weights


def best_epoch(history: dict[str, list[float]], metric: str, direction: str) -> tuple[int, float]:
    """1-based epoch and value of the best monitored metric."""
    values = history.get(metric) or []
    if not values:
        raise RuntimeError(f"metric {metric!r} was not recorded")
    clean = [
        v if math.isfinite(v) else (-math.inf if direction == "maximize" else math.inf)
        for v in values
    ]
    index = int(np.argmax(clean) if direction == "maximize" else np.argmin(clean))
    return index + 1, values[index]


def uses_feature_cache(trial_config: TrialConfig, config: StudyConfig) -> bool:
    """A frozen pretrained backbone without augmentation: its features never change."""
    return (
        config.training.feature_cache
        and trial_config.fine_tune == 0
        and config.weights_kind != "none"
        and not config.training.augmentation.enabled
    )


@dataclass
class _Trainee:
    """What `fit` trains: the whole model on pixels, or only its head on cached features."""

    model: Any
    x_fit: np.ndarray
    x_val: np.ndarray
    whole_model: Callable[[], Any]
    features: Any = None  # search.training.feature_cache.Features, when the head trains alone

    @property
    def cache_info(self) -> dict[str, Any]:
        if self.features is None:
            return {}
        f = self.features
        return {"hit": f.hit, "seconds": round(f.seconds, 3), "computed": f.computed}


def _validation(
    config: StudyConfig, trainee: _Trainee, data: TrainVal, y_val: np.ndarray, batch_size: int
) -> list[Any]:
    """The callbacks that put the validation metrics into each epoch's logs: on JAX all of
    them (see `search.training.batching`), elsewhere those Keras lacks."""
    classes = list(data.classes)
    needs = config.objective.needs_class_metrics
    if fixed_shapes():
        from search.training.val_metrics import class_metrics

        def after(probs: np.ndarray) -> dict[str, float]:
            return class_metrics(data.y_val, np.argmax(probs, axis=1), classes)

        x_val = trainee.x_val
        return [PaddedValidation(x_val, y_val, data.y_val, batch_size, after if needs else None)]
    if not needs:
        return []
    from search.training.val_metrics import ValidationMetrics

    return [ValidationMetrics(trainee.x_val, data.y_val, classes, batch_size)]


def _callbacks(
    config: StudyConfig,
    recorder: EpochRecorder,
    extra: list[Any] | None,
    validation: list[Any],
) -> list[Any]:
    """The fit's callbacks, in the order that matters: the validation metrics are added to
    the epoch's logs first, so that every callback after them reads them."""
    metric, direction = config.objective.monitor, config.objective.direction
    schedule_callbacks = schedule(config.training.lr_schedule, config.training.epochs)
    out = [*schedule_callbacks, *validation, recorder, BestWeights(metric, direction)]
    if config.training.early_stopping_patience > 0:
        out.append(
            keras.callbacks.EarlyStopping(
                monitor=metric,
                mode="max" if direction == "maximize" else "min",
                patience=config.training.early_stopping_patience,
            )
        )
    out.extend(extra or [])
    return out


def _trainee(
    trial_config: TrialConfig, config: StudyConfig, data: TrainVal, seed: int, jit: bool
) -> _Trainee:
    training = config.training
    weights = config.weights_policy()

    def whole_model() -> Any:
        return create_model(
            trial_config,
            data.n_classes,
            data.image_size,
            weights,
            augmentation=training.augmentation,
            class_names=list(data.classes),
            jit_compile=jit,
            seed=seed,
        )

    if not uses_feature_cache(trial_config, config):
        return _Trainee(whole_model(), data.x_train, data.x_val, whole_model)
    from search.training.feature_cache import get_features

    features = get_features(
        trial_config.backbone,
        weights,
        data.image_size,
        data.x_train,
        data.x_val,
        feature_layer=trial_config.feature_layer,
    )
    set_seed(seed)
    record = get_backbone(trial_config.backbone)
    head = build_head(
        record.feature_dim_at(trial_config.feature_layer), trial_config, data.n_classes
    )
    compile_model(head, trial_config, jit_compile=jit)
    return _Trainee(head, features.train, features.val, whole_model, features)


def _trained_model(trainee: _Trainee, need_model: bool) -> tuple[Any, dict[str, int]]:
    """The whole model (its head's trained weights put back on its backbone) and its size."""
    if trainee.features is None:
        return trainee.model, count_params(trainee.model)
    extractor, head_params = trainee.features.extractor_params, count_params(trainee.model)
    params = {
        "total": extractor + head_params["total"],
        "trainable": head_params["trainable"],
        "non_trainable": extractor + head_params["non_trainable"],
    }
    if not need_model:
        return None, params
    model = trainee.whole_model()
    model.get_layer(HEAD_NAME).set_weights(trainee.model.get_weights())
    return model, params


def _step_key(
    trial_config: TrialConfig,
    config: StudyConfig,
    data: TrainVal,
    trainee: _Trainee,
    jit: bool,
    weighted: bool,
) -> tuple[Any, ...]:
    """What a model's traced steps depend on besides its variables' values: the models of
    two fits with equal keys trace the same steps (`models.step_reuse`)."""
    return (
        trainee.features is not None,  # the head alone on cached features
        traced_fields(trial_config),
        data.n_classes,
        tuple(data.classes),
        data.image_size,
        str(config.weights_policy()),
        repr(config.training.augmentation),
        jit,
        keras.config.dtype_policy().name,
        tuple(trainee.x_fit.shape[1:]),
        str(trainee.x_fit.dtype),
        weighted,
    )


def _set_up(training: Any, seed: int) -> bool:
    """Seed Keras and set the dtype policy; whether to compile the steps."""
    set_seed(seed)
    configure_precision(training.mixed_precision)
    return use_xla(training.xla)


def prepare_training(
    trial_config: TrialConfig,
    config: StudyConfig,
    data: TrainVal,
    seed: int | None,
    reuse_steps: bool = False,
) -> tuple[_Trainee, dict[str, Any]]:
    """What every training run sets up the same way (a trial's fit, a refit): seeded Keras
    and dtype policy, the model (or its head on cached features) with its optimizer state
    built, and the training part of `Model.fit`'s arguments (encoded targets, class weights,
    batches as the backend wants them: see `search.training.batching`). With `reuse_steps`
    a kept model of the same architecture, its steps traced, may take the new model's
    state and train in its place (`models.step_reuse`)."""
    training = config.training
    seed = training.seed if seed is None else seed
    jit = _set_up(training, seed)
    y_train = encode_targets(data.y_train, data.n_classes, trial_config)
    balanced = training.class_weights == "balanced"
    class_weight = balanced_class_weights(data.y_train, data.n_classes) if balanced else None
    trainee = _trainee(trial_config, config, data, seed, jit)
    if reuse_steps and backend_name() == "tensorflow":  # JAX: its persistent cache shares
        key = _step_key(trial_config, config, data, trainee, jit, class_weight is not None)
        POOL.resize(config.worker.kept_models)
        kept = POOL.adopt(trainee.model, key)
        if kept is None:
            build_training_state(trainee.model, trainee.x_fit, y_train)
            POOL.keep(trainee.model, key)
        else:
            trainee = dataclasses.replace(trainee, model=kept)
            # The new model, whose state the kept one took, sits in reference cycles:
            # collect it now (a few thousand young objects) rather than train beside its
            # weights on the device (`models.step_reuse.StepPool.collect` keeps the kept
            # models out of sight).
            gc.collect()
    else:
        build_training_state(trainee.model, trainee.x_fit, y_train)
    inputs = fit_inputs(
        trainee.x_fit, y_train, data.y_train, trial_config.batch_size, class_weight, seed
    )
    return trainee, inputs


def fit(
    trial_config: TrialConfig,
    config: StudyConfig,
    data: TrainVal,
    recorder: EpochRecorder,
    callbacks: list[Any] | None = None,
    seed: int | None = None,
    need_model: bool = True,
    reuse_steps: bool = False,
) -> FitResult:
    """Build and train a model for `trial_config`; restore its best epoch's weights.

    A frozen pretrained backbone trains only its head, on cached features (see
    `search.training.feature_cache`), unless the config switches the cache off.

    Args:
        trial_config: The model to build and the optimisation settings.
        config: The study config (epochs, early stopping, weights, augmentation, ...).
        data: Train and validation arrays.
        recorder: Records every epoch and prints one line each.
        callbacks: More Keras callbacks (the pruning callback of a trial).
        seed: Seed for weights initialisation, shuffling and augmentation.
        need_model: Return the whole model even when only the head was trained (trials
            do not need it; `train-best` saves it).
        reuse_steps: Train a kept model of the same architecture, its steps traced, in
            the new model's place and state (`models.step_reuse`); only for a caller that
            holds no model of an earlier fit when it fits again.
    """
    start = time.perf_counter()
    training = config.training
    trainee, inputs = prepare_training(trial_config, config, data, seed, reuse_steps)
    y_val = encode_targets(data.y_val, data.n_classes, trial_config)
    validation = _validation(config, trainee, data, y_val, trial_config.batch_size)
    trainee.model.fit(
        **inputs,
        validation_data=None if fixed_shapes() else (trainee.x_val, y_val),
        epochs=training.epochs,
        callbacks=_callbacks(config, recorder, callbacks, validation),
        verbose=0,
    )
    goal = config.objective
    epoch, value = best_epoch(recorder.history, goal.monitor, goal.direction)
    model, params = _trained_model(trainee, need_model)
    return FitResult(
        model=model,
        history=recorder.history,
        best_epoch=epoch,
        best_value=value,
        epochs_run=recorder.epochs_run,
        seconds=time.perf_counter() - start,
        seconds_per_epoch=float(np.mean(recorder.epoch_seconds)) if recorder.epoch_seconds else 0.0,
        params=params,
        feature_cache=trainee.cache_info,
        head=trainee.model if trainee.features is not None else None,
        head_val=trainee.x_val if trainee.features is not None else None,
    )
