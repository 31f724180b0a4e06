from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.training.fit import balanced_class_weights, best_epoch


def test_balanced_class_weights_match_the_usual_formula() -> None:
    y = np.array([0, 0, 0, 1, 2, 2])
    weights = balanced_class_weights(y, 4)
    assert weights[0] == pytest.approx(6 / (4 * 3)) and weights[1] == pytest.approx(6 / 4)
    assert weights[3] == pytest.approx(6 / 4)  # an absent class does not divide by zero


def test_best_epoch_follows_the_direction() -> None:
    history = {"val_accuracy": [0.3, 0.7, 0.6], "val_loss": [1.2, 0.9, float("nan")]}
    assert best_epoch(history, "val_accuracy", "maximize") == (2, 0.7)
    assert best_epoch(history, "val_loss", "minimize") == (2, 0.9)


def test_a_failing_trial_is_recorded_and_the_worker_goes_on(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build or fit that fails (here: out of memory on the first trial) fails that trial
    with its reason; the worker runs the rest of the budget."""
    import search.runtime.objective as objective
    from search.config import load_config
    from search.runtime.study import create_study
    from search.runtime.worker import run_worker
    from search.study_data import prepare
    from tests.search.helpers import write_config

    real_fit = objective.fit
    calls = []

    def fit_that_fails_once(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("OOM when allocating tensor")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(objective, "fit", fit_that_fails_once)
    # No restarts for memory (0): run in this process, a restart would end run_worker early.
    path = write_config(tmp_path / "c.yaml", trials=3, worker={"max_memory_growth": 0})
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    create_study("failing", storage, config, prepare(config))
    report = run_worker("failing", storage)
    assert (report.failed, report.completed, report.exit_code) == (1, 2, 0)
    trials = optuna.load_study(study_name="failing", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "MemoryError: OOM when allocating tensor"


@pytest.mark.parametrize("patience", [0, 5])
def test_the_returned_model_is_the_best_epochs_model(
    tmp_path: Path, tiny_data: Path, patience: int
) -> None:
    """With or without early stopping, fit returns the weights of the epoch whose metrics
    it reports: here the last epoch is ruined on purpose (all weights zero), so a model
    that kept its last weights would score at chance on the validation split."""
    from models.backend import keras_module
    from search.config import load_config
    from search.study_data import load_train_val, prepare
    from search.training.callbacks import EpochRecorder
    from search.training.fit import fit
    from tests.search.helpers import write_config

    keras = keras_module()
    epochs = 4
    path = write_config(
        tmp_path / "c.yaml", training={"epochs": epochs, "early_stopping_patience": patience}
    )
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    data = load_train_val(prepare(config), config.data.image_size)

    class RuinLastEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == epochs - 1:
                self.model.set_weights([np.zeros_like(w) for w in self.model.get_weights()])

    from models.trial_config import TrialConfig

    trial_config = TrialConfig("small_cnn", head_depth=0, learning_rate=3e-3, fine_tune=1.0)
    recorder = EpochRecorder("[t]", epochs)
    result = fit(trial_config, config, data, recorder, callbacks=[RuinLastEpoch()])
    assert result.epochs_run == epochs and result.best_epoch < epochs
    from models.builder import encode_targets

    y_val = encode_targets(data.y_val, data.n_classes, trial_config)
    loss, accuracy = result.model.evaluate(data.x_val, y_val, verbose=0)[:2]
    at_best = result.metrics_at_best()
    assert accuracy == pytest.approx(at_best["val_accuracy"], abs=1e-6)
    assert loss == pytest.approx(at_best["val_loss"], rel=1e-4)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_learning_rate_follows_the_schedule_in_a_fit_and_a_refit(
    tmp_path: Path, tiny_data: Path, schedule: str
) -> None:
    """Under `cosine` epoch e of E trains at lr * (1 + cos(pi e / E)) / 2, in a trial's fit
    over the config's epochs and in a refit over the epochs it is given; `constant` keeps lr."""
    import math

    from models.backend import keras_module
    from models.trial_config import TrialConfig
    from search.config import load_config
    from search.study_data import load_train_val, prepare
    from search.training.callbacks import EpochRecorder
    from search.training.fit import fit
    from search.training.refit import refit
    from tests.search.helpers import write_config

    keras = keras_module()
    path = write_config(
        tmp_path / "c.yaml",
        training={"epochs": 4, "early_stopping_patience": 0, "lr_schedule": schedule},
    )
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    data = load_train_val(prepare(config), config.data.image_size)
    lr = 4e-3
    trial_config = TrialConfig("small_cnn", head_depth=0, learning_rate=lr, fine_tune=1.0)

    class Probe(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rates: list[float] = []

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if batch == 0:
                rate = self.model.optimizer.learning_rate
                self.rates.append(float(keras.ops.convert_to_numpy(rate)))

    def expected(epochs: int) -> list[float]:
        if schedule == "constant":
            return [lr] * epochs
        return [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]

    probe = Probe()
    fit(trial_config, config, data, EpochRecorder("[t]", 4), callbacks=[probe])
    assert probe.rates == pytest.approx(expected(4), rel=1e-5)
    assert schedule == "constant" or probe.rates[-1] < 0.15 * lr

    # The refit keeps its last epoch: the rate it trained at is the one left on its optimizer.
    result = refit(trial_config, config, data, EpochRecorder("[r]", 3), epochs=3)
    rate = result.model.optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(expected(3)[-1], rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_balanced_class_weights_equal_the_hand_written_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    y = rng.integers(0, n_classes - int(seed % 2), int(rng.integers(1, 200)))  # odd: one absent
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    expected = {i: len(y) / (n_classes * c) for i, c in enumerate(counts)}
    assert balanced_class_weights(y, n_classes) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [1, 16, 37])
def test_predictions_in_padded_batches_equal_predict(n: int) -> None:
    """The trial's confusion matrix comes from `predict_on_batch` in padded batches of one
    shape: the same classes as `predict`, whatever the remainder."""
    from models.backend import keras_module
    from search.training.batching import predict_on_batches

    keras = keras_module()
    x = np.random.default_rng(n).normal(size=(n, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="softmax")])
    out = predict_on_batches(model, x, 16)
    assert out.shape == (n, 4)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_footprint_after_padded_predictions_traces_no_second_step() -> None:
    """On TensorFlow the padded validation batches and the footprint's single uint8 image
    run through one traced predict step (a second trace cost a MobileNetV3Small trial
    0.4 s); the footprint's latency is timed on that step."""
    from models.backend import backend_name, keras_module
    from models.footprint import measure
    from search.training.batching import predict_on_batches

    if backend_name() != "tensorflow":
        pytest.skip("traced predict steps are TensorFlow's")
    keras = keras_module()
    x = np.random.default_rng(0).integers(0, 256, size=(37, 8, 8, 3), dtype=np.uint8)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    predict_on_batches(model, x, 16)
    footprint = measure(model, 8, calls=2)
    assert footprint.latency_ms > 0
    assert model.predict_function.experimental_get_tracing_count() == 1
