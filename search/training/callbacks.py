"""Keras callbacks of a trial's fit: one log line per epoch, the best epoch's weights, and
a stop at the next batch once the worker was interrupted."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common.pauses import pause
from common.progress import log
from models.backend import keras_module

keras = keras_module()


class EpochRecorder(keras.callbacks.Callback):
    """Keeps every epoch's metrics (also when a trial is pruned mid-fit) and logs one line
    per epoch instead of Keras' per-batch progress bar."""

    def __init__(self, prefix: str, epochs: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.epochs = epochs
        self.history: dict[str, list[float]] = {}
        self.epoch_seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._start
        self.epoch_seconds.append(seconds)
        for key, value in (logs or {}).items():
            if isinstance(value, int | float | np.floating):
                self.history.setdefault(key, []).append(float(value))
        logs = logs or {}
        parts = [
            f"{name} {logs[key]:.3f}"
            for key, name in (
                ("loss", "loss"),
                ("accuracy", "acc"),
                ("val_loss", "val_loss"),
                ("val_accuracy", "val_acc"),
                ("val_balanced_accuracy", "val_bal_acc"),
                ("val_macro_f1", "val_f1"),
            )
            if key in logs
        ]
        log(f"{self.prefix} epoch {epoch + 1}/{self.epochs}  {'  '.join(parts)}  ({seconds:.1f}s)")
        pause("epoch-end")  # tests only: a slow trial without slow training

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_seconds)

    @property
    def compile_seconds(self) -> float | None:
        """The first epoch's excess over the median later epoch: mostly compiling the train
        and test steps (and tracing them on TensorFlow). None before a second epoch."""
        if len(self.epoch_seconds) < 2:
            return None
        return max(0.0, self.epoch_seconds[0] - float(np.median(self.epoch_seconds[1:])))


class CosineSchedule(keras.callbacks.Callback):
    """The learning rate falls along half a cosine over the planned epochs: epoch e (from 0)
    of E trains at lr * (1 + cos(pi * e / E)) / 2, so the last epochs take small steps and the
    weights a fit ends on (a refit keeps its last epoch) do not swing from epoch to epoch."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = max(1, epochs)
        self.base: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if self.base is None:
            self.base = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        optimizer.learning_rate = cosine_rate(self.base, epoch, self.epochs)


def cosine_rate(base: float, epoch: int, epochs: int) -> float:
    """`CosineSchedule`'s learning rate for `epoch` (from 0) of `epochs`."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / max(1, epochs)))


def schedule(name: str, epochs: int) -> list[Any]:
    """The callbacks of the config's `training.lr_schedule` for a fit of `epochs` epochs."""
    return [CosineSchedule(epochs)] if name == "cosine" else []


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch that is best on `metric` and puts them back when
    training ends, with or without early stopping, so that the model returned is the one
    whose metrics are reported. "Best" is the first best epoch, as in `best_epoch`."""

    def __init__(self, metric: str, direction: str) -> None:
        super().__init__()
        self.metric, self.maximize = metric, direction == "maximize"
        self.best: float | None = None
        self.weights: list[Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best, self.weights = value, self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class StopWhenInterrupted(keras.callbacks.Callback):
    """Calls the worker's `check` (`Signals.check`) before each batch and after each epoch,
    so a signal whose exception was lost where it landed still stops training within a
    batch. Batch *begin* hooks keep Keras' asynchronous dispatch of batch ends."""

    def __init__(self, check: Callable[[], None]) -> None:
        super().__init__()
        self.check = check

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.check()

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.check()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.check()
