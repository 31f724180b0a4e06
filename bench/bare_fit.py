"""The baseline of service_overhead: a bare `model.fit` of the trial's model on the same
cached arrays, as a whole process (imports, data from the decode cache, build, fit, exit)."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import optuna

    from models.builder import build_training_state, create_model, encode_targets
    from search.config import load_config
    from search.space import suggest
    from search.study_data import load_train_val, prepare

    config = load_config(args.config).with_overrides(data_path=args.data)
    trial_config = suggest(optuna.trial.FixedTrial({}), config.space)  # the space is all fixed
    data = load_train_val(prepare(config), config.data.image_size)
    assert data.from_cache, "run the worker first so that both read the decode cache"
    from models.backend import keras_module

    keras = keras_module()  # the TensorFlow settings a worker runs with
    keras.utils.set_random_seed(config.training.seed)
    model = create_model(
        trial_config,
        data.n_classes,
        data.image_size,
        config.weights,
        class_names=list(data.classes),
        jit_compile=False,
    )
    y_train = encode_targets(data.y_train, data.n_classes, trial_config)
    y_val = encode_targets(data.y_val, data.n_classes, trial_config)
    build_training_state(model, data.x_train, y_train)
    model.fit(
        data.x_train,
        y_train,
        validation_data=(data.x_val, y_val),
        epochs=config.training.epochs,
        batch_size=trial_config.batch_size,
        shuffle=True,
        verbose=0,
    )


if __name__ == "__main__":
    main()
