"""Trials of one shape share compiled steps: under JAX through the persistent cache, under
TensorFlow by training the worker's kept model (`models.step_reuse`)."""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The trials: one shape, every other value of the step changed. Four trials after the first,
# so that one slowed by a busy machine (CI runs other tests beside this one) does not decide.
CHOSEN = [
    {
        "dropout": 0.2,
        "learning_rate": 3e-3,
        "label_smoothing": 0.05,
        "optimizer": "adamw",
        "weight_decay": 3e-4,
    },
    {
        "dropout": 0.05,
        "learning_rate": 1e-3,
        "label_smoothing": 0.0,
        "optimizer": "adam",
        "weight_decay": 1e-5,
    },
    {
        "dropout": 0.1,
        "learning_rate": 2e-3,
        "label_smoothing": 0.0,
        "optimizer": "adam",
        "weight_decay": 1e-4,
    },
    {
        "dropout": 0.3,
        "learning_rate": 5e-3,
        "label_smoothing": 0.1,
        "optimizer": "adamw",
        "weight_decay": 1e-3,
    },
    {
        "dropout": 0.45,
        "learning_rate": 8e-3,
        "label_smoothing": 0.05,
        "optimizer": "adamw",
        "weight_decay": 1e-5,
    },
]


@pytest.mark.slow  # a JAX process of its own, three short trials
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_same_shape_trials_with_other_rates_reuse_the_first_trials_compiled_steps(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Under JAX, trials of one shape but other learning and dropout rates, label smoothing,
    optimizer (Adam or AdamW) and weight decay load the first trial's compiled steps from
    the persistent cache: compile <= 25 % of the first's."""
    import optuna

    from tests.search.helpers import create_cli, write_config

    config = write_config(
        tmp_path / "c.yaml",
        trials=len(CHOSEN),
        pruner={"name": "none"},
        space={
            "backbone": ["small_cnn"],
            "head_depth": [1],
            "head_width": [16],
            "dropout": {"low": 0.05, "high": 0.5},
            "learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
            "fine_tune": [1.0],
            "batch_size": [16],
            "label_smoothing": [0.0, 0.05, 0.1],
            "optimizer": ["adam", "adamw"],
            "weight_decay": {"low": 1.0e-5, "high": 1.0e-3, "log": True},
        },
    )
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),  # empty: the first compiles
        "TUMOR_SEARCH_CACHE": str(tmp_path / "cache"),
    }
    created = create_cli("tiny", config, tiny_data, storage)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    for params in CHOSEN:  # each value the step must not depend on, changed at least once
        study.enqueue_trial(params)
    run = [sys.executable, "-m", "search", "run", "--config", str(config)]
    run += ["--data", str(tiny_data), "--storage", storage, "--no-finalize"]
    proc = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    sys.path.insert(0, str(ROOT))
    from bench.gpu.study import sharing

    shared = sharing(trials)
    assert shared is not None and shared["ratio"] is not None, shared
    assert shared["hits"] > 0
    compiles = [t.user_attrs["compile_seconds"] for t in sorted(trials, key=lambda t: t.number)]
    later = statistics.median(compiles[1:])
    assert later <= 0.25 * compiles[0], (compiles, shared)
    assert [{k: t.params[k] for k in CHOSEN[0]} for t in trials] == CHOSEN


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="TensorFlow's steps"
)
def test_same_shape_trials_on_tensorflow_train_the_first_trials_kept_model(
    tmp_path: Path, tiny_data: Path
) -> None:
    """On TensorFlow a worker keeps the first trial's model and trains the later trials of
    its shape on it (`models.step_reuse`), whatever their rates, smoothing, optimizer and
    decay: their first epochs trace nothing, compile <= 50 % of the first's."""
    import optuna

    from models.step_reuse import POOL
    from search.config import load_config
    from search.runtime.study import create_study
    from search.runtime.worker import run_worker
    from search.study_data import prepare
    from tests.search.helpers import write_config

    path = write_config(
        tmp_path / "c.yaml",
        trials=len(CHOSEN),
        pruner={"name": "none"},
        worker={"max_memory_growth": 0},  # no restart: run_worker runs in this process
        space={
            "backbone": ["small_cnn"],
            "head_depth": [1],
            "head_width": [16],
            "fine_tune": [1.0],
            "batch_size": [16],
        },
    )
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    storage = f"sqlite:///{tmp_path / 't.db'}"
    create_study("tf", storage, config, prepare(config))
    study = optuna.load_study(study_name="tf", storage=storage)
    for params in CHOSEN:
        study.enqueue_trial(params)
    POOL.clear()
    hits = POOL.hits
    report = run_worker("tf", storage)
    assert report.completed == len(CHOSEN)
    assert POOL.hits - hits == len(CHOSEN) - 1
    trials = sorted(
        optuna.load_study(study_name="tf", storage=storage).trials, key=lambda t: t.number
    )
    compiles = [t.user_attrs["compile_seconds"] for t in trials]
    assert statistics.median(compiles[1:]) <= 0.5 * compiles[0], compiles
