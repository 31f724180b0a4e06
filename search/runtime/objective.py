"""The objective: one trial's configuration, trained with pruning, recorded on the trial."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import optuna

from common.pauses import pause
from common.progress import log
from models.backend import jax_cache_hits, runtime_info
from models.footprint import FOOTPRINT_KEYS, Footprint, combine, describe, measure
from models.trial_config import TrialConfig
from search.config import StudyConfig
from search.config_objective import MONITORS
from search.constraints import apply_constraints, violations
from search.errors import one_line
from search.runtime.artifacts import store_of, upload_trial_figures
from search.runtime.outage import StorageUnavailable
from search.runtime.study import RUNTIME_ATTR, TRIAL_CONFIG_ATTR
from search.space import suggest
from search.study_data import TrainVal
from search.training.callbacks import EpochRecorder, StopWhenInterrupted
from search.training.fit import FitResult, fit


class Objective:
    """Callable on an Optuna trial; returns the best validation metric of its fit.

    Args:
        config: The study config.
        data: Train and validation arrays (the test split is not among them).
        interruptible: The block in which signals stop the trial at once (training); the
            worker shields the rest of the trial, so that a finished result is told. What
            it yields, when not None, is called between training steps (`Signals.check`).
    """

    def __init__(
        self,
        config: StudyConfig,
        data: TrainVal,
        interruptible: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.config = config
        self.data = data
        self.interruptible = interruptible

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        entered = time.perf_counter()
        trial_config = suggest(trial, self.config.space)
        trial.set_user_attr(TRIAL_CONFIG_ATTR, trial_config.to_dict())
        trial.set_user_attr(RUNTIME_ATTR, runtime_info())
        prefix = f"[trial {trial.number}]"
        log(f"{prefix} {trial_config.describe()}")
        # Imported here: optuna_integration imports Keras, which must load through
        # models.backend (quietly) first.
        from optuna_integration import KerasPruningCallback

        recorder = EpochRecorder(prefix, self.config.training.epochs)
        goal = self.config.objective
        # Optuna prunes single-objective studies only (trial.report raises for several).
        pruning = [] if goal.is_multi else [KerasPruningCallback(trial, goal.monitor)]
        start = time.perf_counter()
        phases = Phases(before=start - entered)
        hits = jax_cache_hits()
        try:
            with self.interruptible() as check:
                stop = [] if check is None else [StopWhenInterrupted(check)]
                result = fit(
                    trial_config,
                    self.config,
                    self.data,
                    recorder,
                    callbacks=[*stop, *pruning],
                    need_model=False,  # a head on cached features needs no whole model
                    reuse_steps=True,  # the trial's model is dropped before the next fit
                )
        except optuna.TrialPruned:
            _record_pruned(trial, recorder, phases, time.perf_counter() - start)
            log(f"{prefix} pruned after epoch {recorder.epochs_run}")
            raise
        except BaseException:
            _record_partial(trial, recorder, time.perf_counter() - start)
            raise
        pause("after-training")
        record_result(trial, result, time.perf_counter() - start)
        phases.fitted(time.perf_counter() - start, recorder)
        if recorder.compile_seconds is not None:
            trial.set_user_attr("compile_seconds", round(recorder.compile_seconds, 3))
        if runtime_info()["backend"] == "jax":  # steps this trial found compiled already
            trial.set_user_attr("jax_cache_hits", jax_cache_hits() - hits)
        footprint = self._footprint_and_figures(trial, result, trial_config, phases)
        result.model = None  # the footprint and figures were the last use of the whole model
        phases.record(trial)
        measured = {**result.metrics_at_best(), **footprint}
        feasible = apply_constraints(trial, goal.constraints, measured)
        if feasible is False:
            log(f"{prefix} infeasible: {', '.join(violations(trial))}")
        if goal.is_multi:
            return [float(measured[MONITORS.get(name, name)]) for name in goal.names]
        return result.best_value

    def _footprint_and_figures(
        self, trial: optuna.Trial, result: FitResult, trial_config: TrialConfig, phases: Phases
    ) -> dict[str, float]:
        """Record the trained model's footprint; upload its curves and confusion matrix."""
        store = store_of(getattr(trial, "study", None))
        with phases.timing("figures"):  # first: the footprint's calls reuse its predict step
            confusion = self._confusion(result, trial_config.batch_size) if store else None
        with phases.timing("footprint"):
            footprint = record_footprint(
                trial, trial_footprint(result, trial_config, self.config, self.data.image_size)
            )
        with phases.timing("figures"):
            upload_trial_figures(store, trial, result.history, confusion)
        return footprint

    def _confusion(
        self, result: FitResult, batch_size: int
    ) -> tuple[list[list[int]], list[str]] | None:
        """The validation confusion matrix of the best epoch's model, for the trial's figures
        (None without validation images, or when predicting failed)."""
        try:  # a figure is never worth a failed trial
            if not len(self.data.y_val):
                return None
            from sklearn.metrics import confusion_matrix

            predicted = result.val_classes(self.data.x_val, batch_size)
            labels = list(range(self.data.n_classes))
            matrix = confusion_matrix(self.data.y_val, predicted, labels=labels).tolist()
            return matrix, list(self.data.classes)
        except Exception as exc:  # noqa: BLE001
            log(f"artifacts: no confusion matrix ({one_line(f'{type(exc).__name__}: {exc}')})")
            return None


PHASES_ATTR = "phase_seconds"


@dataclass
class Phases:
    """Where a trial's time went inside the objective, recorded as ``phase_seconds``:
    ``before`` (sampling, attributes), ``setup`` (data to the device, building the model or
    loading cached features, restoring the best epoch: the fit's time outside its epochs),
    ``epochs`` (of which ``compile``: the first epoch's excess over the median later one),
    ``footprint`` and ``figures``. What the trial's storage times add beyond their sum is the
    worker's own (claiming, storage and pruner calls, telling)."""

    before: float
    seconds: dict[str, float] = field(default_factory=dict)

    def fitted(self, fit_wall: float, recorder: EpochRecorder) -> None:
        epochs = float(sum(recorder.epoch_seconds))
        self.seconds.update(setup=max(fit_wall - epochs, 0.0), epochs=epochs)
        if recorder.compile_seconds is not None:
            self.seconds["compile"] = recorder.compile_seconds

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def record(self, trial: Any) -> None:
        values = {"before": self.before, **self.seconds}
        with contextlib.suppress(Exception, StorageUnavailable):  # never fails a trial
            trial.set_user_attr(PHASES_ATTR, {k: round(v, 3) for k, v in values.items()})


# The footprints of feature extractors this process measured: one per backbone, feature
# layer, input size, weights and dtype policy, however many heads a study trains on them.
_EXTRACTORS: dict[Any, Footprint] = {}


def trial_footprint(
    result: FitResult, trial_config: TrialConfig, config: StudyConfig, image_size: int
) -> Footprint:
    """What the trained model costs to deploy (`models.footprint`): measured on the whole
    model, or for a head trained on cached features, the extractor's (once per process)
    combined with the head's: building the whole model again to time it cost a frozen
    Xception trial on an H200 several seconds of its 20."""
    if result.model is not None or result.head is None:
        return measure(result.model, image_size)
    from search.training.feature_cache import build_extractor, cache_key

    weights = config.weights_policy()
    backbone, layer = trial_config.backbone, trial_config.feature_layer
    # The feature cache's own key: the extractor's weights, size, layer, dtype and backend.
    key = cache_key(backbone, weights, image_size, layer) or (backbone, layer, image_size)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = measure(
            build_extractor(backbone, image_size, weights, layer), image_size
        )
    return combine(_EXTRACTORS[key], measure(result.head, None))


def record_footprint(trial: Any, footprint: Footprint) -> dict[str, float]:
    """Record a trial's footprint as user attributes ``latency_ms``, ``params_m`` and
    ``size_mb``."""
    values = footprint.to_dict()
    for key in FOOTPRINT_KEYS:
        trial.set_user_attr(key, values[key])
    log(f"[trial {trial.number}] {describe(values)}")
    return {key: float(values[key]) for key in FOOTPRINT_KEYS}


def _record_pruned(trial: Any, recorder: EpochRecorder, phases: Phases, wall: float) -> None:
    """A pruned trial's history, timings and learning curves, before it is told."""
    _record_partial(trial, recorder, wall)
    phases.fitted(wall, recorder)
    with phases.timing("figures"):
        upload_trial_figures(store_of(getattr(trial, "study", None)), trial, recorder.history)
    phases.record(trial)


def _record_partial(trial: optuna.Trial, recorder: EpochRecorder, wall: float) -> None:
    try:
        trial.set_user_attr("history", recorder.history)
        trial.set_user_attr("epochs_run", recorder.epochs_run)
        trial.set_user_attr("wall_seconds", round(wall, 3))
        if recorder.epoch_seconds:
            trial.set_user_attr(
                "seconds_per_epoch",
                round(sum(recorder.epoch_seconds) / len(recorder.epoch_seconds), 3),
            )
        if recorder.compile_seconds is not None:
            trial.set_user_attr("compile_seconds", round(recorder.compile_seconds, 3))
    except (Exception, StorageUnavailable):  # noqa: BLE001 - never hide the original error
        pass


def record_result(trial: Any, result: FitResult, wall: float) -> None:
    """The trial's user attributes: history, size, timing and the best epoch's metrics."""
    trial.set_user_attr("history", result.history)
    trial.set_user_attr("epochs_run", result.epochs_run)
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("params", result.params["total"])
    trial.set_user_attr("trainable_params", result.params["trainable"])
    trial.set_user_attr("seconds_per_epoch", round(result.seconds_per_epoch, 3))
    trial.set_user_attr("wall_seconds", round(wall, 3))
    trial.set_user_attr(
        "validation",
        {k: round(v, 6) for k, v in result.metrics_at_best().items() if k.startswith("val_")},
    )
    if result.feature_cache:
        trial.set_user_attr("feature_cache", result.feature_cache)
