"""Trials of one architecture train one kept model (TensorFlow): a kept model that takes a
new model's state trains exactly as the new model would, its steps traced once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.backend import backend_name, release_models
from models.step_reuse import KEPT_MODELS, POOL, StepPool, traced_fields
from models.trial_config import TrialConfig

tensorflow_only = pytest.mark.skipif(
    backend_name() != "tensorflow", reason="kept models serve TensorFlow's traced steps"
)

FIRST = TrialConfig(
    "small_cnn", head_depth=1, head_width=16, dropout=0.2, learning_rate=3e-3, fine_tune=1.0
)
# The same shapes, every value the steps read from variables or targets changed.
OTHER = dataclasses.replace(
    FIRST,
    dropout=0.45,
    learning_rate=8e-4,
    optimizer="adamw",
    weight_decay=1e-3,
    label_smoothing=0.1,
)


def _data():  # noqa: ANN202
    from search.study_data import TrainVal

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    y = np.arange(96) % 4
    classes = ("glioma", "meningioma", "notumor", "pituitary")
    return TrainVal(x[:72], y[:72], x[72:], y[72:], classes, 32, 0.0, False, "test")


def _config(tmp_path: Path):  # noqa: ANN202
    from search.config import load_config
    from tests.search.helpers import write_config

    path = write_config(tmp_path / "c.yaml", training={"epochs": 3, "early_stopping_patience": 0})
    return load_config(str(path))


def _fit(config, data, trial_config: TrialConfig, reuse: bool):  # noqa: ANN001, ANN202
    from search.training.callbacks import EpochRecorder
    from search.training.fit import fit

    result = fit(
        trial_config, config, data, EpochRecorder("[t]", 3), need_model=True, reuse_steps=reuse
    )
    weights = [np.array(w) for w in result.model.get_weights()]
    return result.history, weights, result.model


@tensorflow_only
def test_a_kept_model_trains_bit_for_bit_as_a_new_one(tmp_path: Path) -> None:
    """A trial of the same architecture trains the kept model, its train step not traced
    again, to the same history and weights as a new model would: other dropout, learning
    rate, optimizer, weight decay or label smoothing change no traced step."""
    config, data = _config(tmp_path), _data()
    POOL.clear()
    release_models()
    new_history, new_weights, _ = _fit(config, data, FIRST, reuse=False)
    release_models()
    _, _, kept = _fit(config, data, OTHER, reuse=True)  # kept for later trials
    release_models()
    hits, traced, train_step = POOL.hits, [], kept.train_step
    kept.train_step = lambda data: traced.append(1) or train_step(data)  # called as it traces
    history, weights, model = _fit(config, data, FIRST, reuse=True)
    assert POOL.hits == hits + 1 and model is kept and not traced
    assert history == new_history
    for got, want in zip(weights, new_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    release_models()


@tensorflow_only
def test_another_architecture_is_not_shared(tmp_path: Path) -> None:
    config, data = _config(tmp_path), _data()
    POOL.clear()
    _, _, first = _fit(config, data, FIRST, reuse=True)
    release_models()
    wider = dataclasses.replace(FIRST, head_width=32)
    _, _, second = _fit(config, data, wider, reuse=True)
    assert second is not first and len(POOL) == 2
    release_models()
    _, _, unshared = _fit(config, data, FIRST, reuse=False)  # train-best never shares
    assert unshared is not first
    release_models()


def test_traced_fields_keep_what_changes_the_steps() -> None:
    assert traced_fields(FIRST) == traced_fields(OTHER)
    assert traced_fields(FIRST) != traced_fields(dataclasses.replace(FIRST, head_width=32))
    assert traced_fields(FIRST) != traced_fields(dataclasses.replace(FIRST, fine_tune=0.5))
    flat = dataclasses.replace(FIRST, head_depth=0)  # no hidden layer: its width is unused
    assert traced_fields(flat) == traced_fields(dataclasses.replace(flat, head_width=256))


@tensorflow_only
def test_the_pool_keeps_its_last_models_and_frees_the_ones_it_drops() -> None:
    """Past its capacity the pool drops its least recently used model, whose graphs the
    next collection that frees dropped models frees, although what the pool keeps is hidden
    from the collector."""
    import gc
    import weakref

    from models.backend import keras_module

    keras = keras_module()

    def model(units: int):  # noqa: ANN202
        made = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
        made.compile(optimizer="adam", loss="mse")
        made.fit(np.ones((8, 4)), np.ones((8, units)), epochs=1, verbose=0)
        return made

    pool = StepPool(capacity=2)
    first = model(1)
    ref = weakref.ref(first)
    pool.keep(first, "a")
    pool.keep(model(2), "b")
    pool.collect()
    assert not any(o is ref() for o in gc.get_objects())  # out of the collector's sight
    pool.keep(model(3), "c")  # "a" goes
    del first
    pool.collect(free_dropped=False)  # a worker frees it once the trial is told
    assert ref() is not None and pool.let_go
    pool.collect()
    assert ref() is None and len(pool) == 2 and not pool.let_go
    assert pool.let_go_largest() and len(pool) == 1
    pool.clear()
    pool.collect()


@tensorflow_only
def test_a_worker_over_its_memory_limit_lets_go_of_kept_models_before_restarting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept models count toward `worker.max_memory_growth`; past it they go first, the
    largest first, and the process restarts only if that was not enough."""
    from types import SimpleNamespace

    from models.backend import keras_module
    from search.runtime import restart
    from search.runtime.restart import MemoryWatch, current_rss_mb
    from search.runtime.worker import _memory_over_limit

    monkeypatch.setattr(restart, "_restartable", True)  # as in a `python -m search` process
    keras = keras_module()
    POOL.clear()
    for units in (1, 2):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
        model.compile(optimizer="adam", loss="mse")
        POOL.keep(model, units)
    roomy = MemoryWatch(limit=10.0)  # far from its limit: the models stay
    roomy.record(current_rss_mb())
    assert not _memory_over_limit(SimpleNamespace(memory=roomy)) and len(POOL) == 2
    tight = MemoryWatch(limit=1e-6)
    tight.record(current_rss_mb() / 2)  # as if the worker had doubled since its first trial
    tight.record(current_rss_mb())
    assert _memory_over_limit(SimpleNamespace(memory=tight))  # still over: restart
    assert len(POOL) == 0


@tensorflow_only
def test_a_worker_frees_the_models_its_pool_dropped_once_the_trial_is_told() -> None:
    """A trial's tell does not wait for the collection that frees a dropped kept model
    (0.4-1.2 s over all the process holds); the worker's memory check before the next
    trial frees it."""
    import weakref
    from types import SimpleNamespace

    from models.backend import keras_module
    from search.runtime.restart import MemoryWatch, current_rss_mb
    from search.runtime.worker import _memory_over_limit

    keras = keras_module()
    POOL.clear()
    release_models()
    POOL.resize(1)
    try:
        first = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        first.compile(optimizer="adam", loss="mse")
        ref = weakref.ref(first)
        POOL.keep(first, "a")
        release_models()
        POOL.keep(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), "b")
        del first
        release_models(free_dropped=False)  # as `_tell` does
        assert ref() is not None
        watch = MemoryWatch(limit=10.0)
        watch.record(current_rss_mb())
        assert not _memory_over_limit(SimpleNamespace(memory=watch))
        assert ref() is None and len(POOL) == 1
    finally:
        POOL.clear()
        POOL.resize(KEPT_MODELS)
        release_models()
