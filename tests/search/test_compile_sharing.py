"""Under JAX, trials of one shape share compiled steps through the persistent cache."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow  # a JAX process of its own, three short trials
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_same_shape_trials_with_other_rates_reuse_the_first_trials_compiled_steps(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Under JAX, trials of one shape but other learning and dropout rates and label
    smoothing load the first trial's compiled steps from the persistent cache: compile
    <= 25 % of the first's."""
    import optuna

    from tests.search.helpers import write_config

    config = write_config(
        tmp_path / "c.yaml",
        trials=3,
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
        },
    )
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),  # empty: the first compiles
        "TUMOR_SEARCH_CACHE": str(tmp_path / "cache"),
    }
    run = [sys.executable, "-m", "search", "run", "--config", str(config)]
    run += ["--data", str(tiny_data), "--storage", storage]
    proc = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    sys.path.insert(0, str(ROOT))
    from bench.gpu.study import sharing

    shared = sharing(trials)
    assert shared is not None and shared["ratio"] is not None, shared
    assert shared["ratio"] <= 0.25, shared
    assert shared["hits"] > 0
    assert len({t.params["dropout"] for t in trials}) == 3  # other rates, one shape
    assert len({t.params["learning_rate"] for t in trials}) == 3
    smoothing = [t.params["label_smoothing"] for t in trials]
    assert len(set(smoothing)) >= 2, f"the seeded sampler drew one smoothing only: {smoothing}"
