"""pruning_epoch_fraction and rss_growth.

pruning_epoch_fraction: epochs trained by a 20-trial study with median pruning divided by the
same study without pruning (same sampler seed), both studies' best values beside it. The
study is a transfer search: a small_cnn backbone pretrained on other phantom images (a weights
file), frozen, with heads trained on its cached features.

rss_growth: a worker's resident memory after trial 20 divided by after trial 2, in a study of
20 short trials that each train a whole network (where Keras' per-model memory shows), with
no model kept for reuse (`worker.kept_models: 0`). rss_kept_models: the same study with the
default kept models (`models.step_reuse`), its trial 20's memory over the first study's.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness import cli, note, phantoms, report, write_yaml

TRIALS = 20
EPOCHS = 30
SIZE = 48


def _pretrained_backbone(workdir: Path) -> Path:
    """small_cnn trained on a different phantom set (seed 1), saved as a weights file."""
    path = workdir / "small_cnn-phantoms.weights.h5"
    if path.exists():
        return path
    from models.backend import keras_module
    from models.builder import build_training_state, create_model, encode_targets
    from models.trial_config import TrialConfig
    from search.config import StudyConfig
    from search.study_data import load_train_val, prepare

    keras = keras_module()
    source = phantoms(workdir, per_class=150, size=SIZE, seed=1)
    config = StudyConfig.from_dict(
        {
            "space": {"backbone": ["small_cnn"], "fine_tune": [1.0]},
            "weights": "none",
            "data": {"path": str(source), "image_size": SIZE},
        }
    )
    data = load_train_val(prepare(config), SIZE)
    keras.utils.set_random_seed(1)
    trial_config = TrialConfig(
        "small_cnn", head_depth=1, head_width=64, dropout=0.2, fine_tune=1.0, learning_rate=2e-3
    )
    model = create_model(trial_config, 4, SIZE, "none")
    y_train = encode_targets(data.y_train, 4, trial_config)
    build_training_state(model, data.x_train, y_train)
    history = model.fit(
        data.x_train,
        y_train,
        validation_data=(data.x_val, encode_targets(data.y_val, 4, trial_config)),
        epochs=15,
        batch_size=32,
        verbose=0,
    )
    note(
        f"pretrained small_cnn on other phantoms: val_accuracy {max(history.history['val_accuracy']):.3f}"
    )
    model.get_layer("backbone").save_weights(path)
    keras.backend.clear_session()
    return path


def _run_study(workdir: Path, name: str, payload: dict, data: Path) -> list:
    import optuna

    db = workdir / f"{name}.db"
    db.unlink(missing_ok=True)
    storage = f"sqlite:///{db}"
    config = write_yaml(workdir / f"{name}.yaml", payload)
    cli(
        "study",
        "create",
        "--study",
        name,
        "--config",
        str(config),
        "--data",
        str(data),
        "--storage",
        storage,
    )
    seconds, _ = cli(
        "worker", "--study", name, "--storage", storage, "--data", str(data), "--quiet"
    )
    study = optuna.load_study(study_name=name, storage=storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    epochs = sum(len(t.intermediate_values) for t in trials)
    note(
        f"{name}: {len(trials)} trials, {pruned} pruned, {epochs} epochs, best {study.best_value:.4f}, {seconds:.0f}s"
    )
    return trials


def _search_config(weights: Path, data: Path, pruner: str) -> dict:
    return {
        "name": f"pruning-{pruner}",
        "trials": TRIALS,
        "weights": str(weights),
        "data": {
            "path": str(data),
            "split": "official",
            "seed": 0,
            "val_fraction": 0.25,
            "image_size": SIZE,
        },
        "training": {"epochs": EPOCHS, "early_stopping_patience": 0, "seed": 0},
        "space": {
            "backbone": ["small_cnn"],
            "fine_tune": [0.0],
            "head_depth": {"low": 0, "high": 3},
            "head_width": [16, 32, 64, 128, 256],
            "dropout": {"low": 0.0, "high": 0.6},
            "learning_rate": {"low": 1.0e-5, "high": 1.0e-1, "log": True},
            "batch_size": [16, 32, 64],
        },
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 10},
        "pruner": {"name": pruner, "n_startup_trials": 3, "n_warmup_steps": 1},
    }


def _memory_rss(workdir: Path, kept_models: int) -> list[float]:
    """Each trial's resident memory in the memory study, with `kept_models` kept models."""
    small = phantoms(workdir, per_class=40, size=32, seed=2)
    name = f"memory-kept{kept_models}"
    config = {
        "name": name,
        "trials": TRIALS,
        "weights": "none",
        "data": {
            "path": str(small),
            "split": "official",
            "seed": 0,
            "val_fraction": 0.2,
            "image_size": 32,
        },
        "training": {"epochs": 1, "early_stopping_patience": 0, "seed": 0},
        "space": {
            "backbone": ["small_cnn"],
            "fine_tune": [1.0],
            "head_depth": {"low": 0, "high": 2},
            "head_width": [32, 64],
            "learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        },
        "pruner": {"name": "none"},
        "worker": {"kept_models": kept_models},
    }
    return [t.user_attrs["rss_mb"] for t in _run_study(workdir, name, config, small)]


def _memory(workdir: Path) -> float:
    """rss_growth without kept models (what Keras keeps per model), then what the default
    kept models (`worker.kept_models`) hold on top."""
    rss = _memory_rss(workdir, 0)
    growth = rss[19] / rss[1]
    report(
        "rss_growth",
        growth,
        rss_trial2_mb=f"{rss[1]:.0f}",
        rss_trial20_mb=f"{rss[19]:.0f}",
        rss_max_mb=f"{max(rss):.0f}",
        kept_models=0,
        target="<= 1.10",
    )
    from search.config_fields import WorkerConfig

    default = WorkerConfig().kept_models
    kept = _memory_rss(workdir, default)
    report(
        "rss_kept_models",
        f"{kept[19] / rss[19]:.3f}",
        kept_models=default,
        rss_trial20_mb=f"{kept[19]:.0f}",
        rss_growth=f"{kept[19] / kept[1]:.3f}",
        rss_max_mb=f"{max(kept):.0f}",
        what="trial 20's memory with the default kept models over without",
    )
    return growth


def run(workdir: Path) -> tuple[float, float]:
    weights = _pretrained_backbone(workdir)
    data = phantoms(workdir, per_class=150, size=SIZE, seed=0)
    best = {}
    epochs = {}
    for pruner in ("median", "none"):
        trials = _run_study(
            workdir, f"pruning-{pruner}", _search_config(weights, data, pruner), data
        )
        epochs[pruner] = sum(len(t.intermediate_values) for t in trials)
        best[pruner] = max(t.value for t in trials if t.value is not None)
    fraction = epochs["median"] / epochs["none"]
    report(
        "pruning_epoch_fraction",
        fraction,
        best_pruned=f"{best['median']:.4f}",
        best_unpruned=f"{best['none']:.4f}",
        best_difference=f"{abs(best['median'] - best['none']):.4f}",
        target="<= 0.6, best within 0.02",
    )

    growth = _memory(workdir)
    return fraction, growth
