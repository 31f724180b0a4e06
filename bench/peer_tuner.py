"""The peer side of `make bench-peer`: KerasTuner's Hyperband over our search space.

Run as a process of its own (`python -m bench.peer_tuner ...`), so that it pays the same
start-up costs as our command-line pipeline. It searches the study config's space with
`keras_tuner.Hyperband` (objective val_accuracy, max_epochs = the config's epochs) on the
train/validation arrays our manifest makes, stops starting trials and training at its
deadline, then evaluates the best model once on the test split and writes a JSON result.

Models are built by `models.builder.create_model` from a `TrialConfig`, so both sides build
identical architectures; only the choice of configurations differs. keras-tuner is
imported here and nowhere in the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras_tuner as kt  # noqa: E402

from models.backend import configure_precision, keras_module, use_xla  # noqa: E402
from models.builder import build_training_state, create_model, encode_targets  # noqa: E402
from models.trial_config import TrialConfig  # noqa: E402
from search.config import StudyConfig, load_config  # noqa: E402
from search.space import INT_PARAMS, Choice, FloatRange, IntRange, SearchSpace  # noqa: E402

keras = keras_module()


def declare(hp: kt.HyperParameters, space: SearchSpace) -> dict[str, Any]:
    """Declare each parameter of our space as the matching KerasTuner hyperparameter and
    return the values `hp` holds for them (the same choices and ranges, no others)."""
    values: dict[str, Any] = {}
    for name, param in space.params:
        if isinstance(param, Choice):
            values[name] = hp.Choice(name, list(param.values))
        elif isinstance(param, IntRange):
            # KerasTuner reads a log range's step as a factor: give a log range none.
            step = None if param.log else param.step
            sampling = "log" if param.log else "linear"
            values[name] = hp.Int(name, param.low, param.high, step=step, sampling=sampling)
        elif isinstance(param, FloatRange):
            values[name] = hp.Float(
                name,
                param.low,
                param.high,
                step=param.step,
                sampling="log" if param.log else "linear",
            )
        else:
            values[name] = hp.Fixed(name, param.value)
    for name in INT_PARAMS & set(values):
        values[name] = int(values[name])
    return values


class SpaceHyperModel(kt.HyperModel):
    """Builds our model for KerasTuner's choice of values and fits it as our trials do
    (the config's seed, batch size, early stopping; optimizer state built up front)."""

    def __init__(self, config: StudyConfig, classes: tuple[str, ...]) -> None:
        super().__init__(name="tumor_search_space")
        self.config = config
        self.classes = classes

    def trial_config(self, hp: kt.HyperParameters) -> TrialConfig:
        return TrialConfig(**declare(hp, self.config.space))

    def build(self, hp: kt.HyperParameters) -> Any:
        training = self.config.training
        keras.utils.set_random_seed(training.seed)
        configure_precision(training.mixed_precision)
        return create_model(
            self.trial_config(hp),
            len(self.classes),
            self.config.data.image_size,
            self.config.weights_policy(),
            augmentation=training.augmentation,
            class_names=list(self.classes),
            jit_compile=use_xla(training.xla),
            seed=training.seed,
        )

    def fit(self, hp: kt.HyperParameters, model: Any, x: Any, y: Any, **kwargs: Any) -> Any:
        trial_config = self.trial_config(hp)
        n = len(self.classes)
        x_val, y_val = kwargs.pop("validation_data")
        targets = encode_targets(y, n, trial_config)
        build_training_state(model, x, targets)
        return model.fit(
            x,
            targets,
            validation_data=(x_val, encode_targets(y_val, n, trial_config)),
            batch_size=trial_config.batch_size,
            shuffle=True,
            **kwargs,
        )


class DeadlineOracle(kt.oracles.HyperbandOracle):
    """Hyperband that starts no trial once the wall clock passes `deadline` (time.time())."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if time.time() >= self.deadline:
            return {"status": "STOPPED"}
        return super().populate_space(trial_id)


class DeadlineHyperband(kt.Hyperband):
    """`kt.Hyperband` (its bracket epochs and warm starts) driven by a `DeadlineOracle`."""

    def __init__(self, hypermodel: kt.HyperModel, oracle: DeadlineOracle, **kwargs: Any) -> None:
        kt.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    def _configure_tensorboard_dir(self, callbacks: Any, trial: Any, execution: int = 0) -> None:
        # keras-tuner 1.4 imports tensorboard here on TensorFlow even when no TensorBoard
        # callback is passed; tensorboard is not a dependency and the bench passes none.
        return None


class StopAtDeadline(keras.callbacks.Callback):
    """Ends training after the current batch once the deadline has passed."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if time.time() >= self.deadline:
            self.model.stop_training = True


def make_tuner(
    config: StudyConfig, classes: tuple[str, ...], deadline: float, seed: int, directory: Path
) -> DeadlineHyperband:
    """Hyperband on our space: objective val_accuracy, max_epochs = the config's epochs,
    as many Hyperband iterations as the deadline allows."""
    oracle = DeadlineOracle(
        objective=kt.Objective("val_accuracy", "max"),
        max_epochs=config.training.epochs,
        factor=3,
        hyperband_iterations=10_000,
        seed=seed,
        deadline=deadline,
    )
    return DeadlineHyperband(
        SpaceHyperModel(config, classes),
        oracle,
        directory=str(directory),
        project_name=f"peer-{seed}",
        overwrite=True,
    )


def search_and_test(
    config: StudyConfig, data_dir: str, deadline: float, seed: int, directory: Path
) -> dict[str, Any]:
    """Search until `deadline`, then test the best model once; the result as a dict."""
    from search.study_data import load_test, load_train_val, prepare

    start = time.time()
    data = prepare(config, data_dir)
    train_val = load_train_val(data, config.data.image_size)
    tuner = make_tuner(config, train_val.classes, deadline, seed, directory)
    callbacks: list[Any] = [StopAtDeadline(deadline)]
    if config.training.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=config.training.early_stopping_patience
            )
        )
    tuner.search(
        train_val.x_train,
        train_val.y_train,
        validation_data=(train_val.x_val, train_val.y_val),
        callbacks=callbacks,
        verbose=0,
    )
    searched = time.time()
    best_trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    test = load_test(data, config.data.image_size)
    probs = model.predict(test.x, batch_size=256, verbose=0)
    accuracy = float((probs.argmax(axis=1) == test.y).mean())
    trials = tuner.oracle.trials.values()
    return {
        "test_accuracy": accuracy,
        "test_images": len(test.y),
        "best_val_accuracy": float(best_trial.score),
        "best_values": {
            k: v for k, v in best_trial.hyperparameters.values.items() if not k.startswith("tuner/")
        },
        "trials": len(tuner.oracle.trials),
        "completed_trials": sum(t.status == "COMPLETED" for t in trials),
        "search_seconds": round(searched - start, 2),
        "evaluation_seconds": round(time.time() - searched, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="study config YAML (the bench's)")
    parser.add_argument("--data", required=True, help="phantom dataset folder")
    parser.add_argument("--deadline", type=float, required=True, help="time.time() to stop at")
    parser.add_argument("--seed", type=int, default=0, help="KerasTuner's seed")
    parser.add_argument("--workdir", required=True, help="KerasTuner's trial folder")
    parser.add_argument("--out", required=True, help="result JSON to write")
    args = parser.parse_args(argv)
    # Hyperband's warm-started trials reload weights without their optimizer's state.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    config = load_config(args.config)
    result = search_and_test(config, args.data, args.deadline, args.seed, Path(args.workdir))
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
