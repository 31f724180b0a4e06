"""The Hyperband and successive-halving pruners of a study config prune in a real study.

Set-up that leaves nothing to luck: the pruner has one bracket, a configuration that
learns is enqueued first and runs alone (the first trial at a rung is always promoted),
then a configuration that cannot learn (learning rate 1e-7: accuracy stays at chance). At
its rung the bad trial's validation accuracy is below the good one's, so successive halving
(reduction factor 2 or 3, two trials: only the best of a rung goes on) must stop it there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search.runtime.storage import open_storage
from tests.conftest import run_cli
from tests.search.helpers import trials_of, write_config

EPOCHS = 10
GOOD_LR, BAD_LR = 3.0e-3, 1.0e-7

# Rungs sit at step min_resource * reduction_factor**k (steps count epochs from 0).
PRUNERS: dict[str, tuple[dict[str, Any], set[int]]] = {
    # One bracket: floor(log2(EPOCHS / 8)) + 1 == 1; its only rung is at step 8.
    "hyperband": ({"name": "hyperband", "min_resource": 8, "reduction_factor": 2}, {8}),
    # Rungs at steps 1, 3 and 9: the last epoch at the latest.
    "successive_halving": (
        {"name": "successive_halving", "min_resource": 1, "reduction_factor": 3},
        {1, 3, 9},
    ),
}


@pytest.fixture(scope="module")
def learnable_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantoms that small_cnn learns from in a few epochs (val accuracy ~0.8 by epoch 9)."""
    from data.synth import synthesize

    out = tmp_path_factory.mktemp("learnable") / "data"
    synthesize(out, per_class=50, size=48, seed=5, test_fraction=0.2)
    return out


@pytest.mark.backends
@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_pruner_stops_the_configuration_that_cannot_learn(
    pruner: str, tmp_path: Path, learnable_data: Path
) -> None:
    """Guards the config -> Optuna pruner mapping (search/runtime/study.py make_pruner) and the
    pruning path of a trial: the bad trial ends PRUNED at one of the config's rungs, with a
    value below the good trial's there; the good trial completes every epoch."""
    settings, rungs = PRUNERS[pruner]
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    # write_config + `study create` (create_tiny_study's own `data` argument would shadow
    # the config's data section).
    config = write_config(
        tmp_path / "p.yaml",
        trials=2,
        data={"image_size": 48},
        training={"epochs": EPOCHS, "early_stopping_patience": 0, "seed": 0},
        space={
            "backbone": ["small_cnn"],
            "head_depth": [0],
            "head_width": [32],
            "dropout": [0.0],
            "learning_rate": {"low": BAD_LR, "high": 1.0e-2, "log": True},
            "fine_tune": [1.0],
            "batch_size": [16],
        },
        pruner=settings,
    )
    common = ("--study", pruner, "--storage", storage, "--data", str(learnable_data))
    created = run_cli("study", "create", "--config", str(config), *common)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name=pruner, storage=open_storage(storage))
    study.enqueue_trial({"learning_rate": GOOD_LR})
    study.enqueue_trial({"learning_rate": BAD_LR})

    result = run_cli("worker", *common)
    assert result.returncode == 0, result.stderr

    good, bad = sorted(trials_of(storage, pruner), key=lambda t: t.number)
    assert good.params["learning_rate"] == GOOD_LR and bad.params["learning_rate"] == BAD_LR
    assert good.state == TrialState.COMPLETE
    assert sorted(good.intermediate_values) == list(range(EPOCHS))
    assert bad.state == TrialState.PRUNED, (bad.state, bad.intermediate_values, good.value)
    step = bad.last_step
    assert step in rungs, (step, rungs)
    assert bad.intermediate_values[step] < good.intermediate_values[step]
    assert f"[trial {bad.number}] pruned after epoch {step + 1}" in result.stderr
    assert "1 completed, 1 pruned" in result.stderr
