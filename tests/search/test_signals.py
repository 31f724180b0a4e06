"""A worker's signals stop training even when the handler's exception is lost where it lands
(Python ignores one raised inside a finalizer; library code may catch it): the pending
signal is checked again before the next batch."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from models.backend import keras_module
from search.runtime.signals import Signals, WorkerInterrupted
from search.training.callbacks import StopWhenInterrupted

keras = keras_module()


class LoseASignal(keras.callbacks.Callback):
    """Sends SIGINT at the start of epoch 2 and swallows the handler's exception, as a
    finalizer would; counts the epochs that ran."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs += 1
        if epoch == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)  # the handler runs in this thread, here
            except WorkerInterrupted:
                pass


def _fit(signals: Signals, stop: bool) -> LoseASignal:
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lose = LoseASignal()
    with signals.interruptible() as check:
        extra = [StopWhenInterrupted(check)] if stop else []
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[lose, *extra])
    return lose


@pytest.mark.parametrize("stop", [True, False])
def test_a_lost_interrupt_still_stops_training_at_the_next_batch(stop: bool) -> None:
    signals = Signals()
    signals.install()
    try:
        if stop:
            with pytest.raises(WorkerInterrupted):
                _fit(signals, stop)
        else:  # without the check, the lost signal lets the fit run to its end
            assert _fit(signals, stop).epochs == 5
        assert signals.pending == signal.SIGINT
    finally:
        signals.restore()


def test_the_check_is_what_the_block_yields() -> None:
    signals = Signals()
    with signals.interruptible() as check:
        check()  # nothing pending
        signals.pending = signal.SIGTERM
        with pytest.raises(WorkerInterrupted) as raised:
            check()
    assert raised.value.exit_code == 143
