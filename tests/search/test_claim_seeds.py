"""Workers that claim at the same time draw distinct configurations.

Each claim seeds the sampler with the config's seed and the number of the trial it is about
to start. Counting the trials stored instead gave a queued trial (a seed configuration with
its other params left to the sampler) and the first new trial the same seed: two workers
started side by side trained the same configuration (seen on a GPU, 3 workers of a
fine-tuning study: trials 0 and 1 identical, epoch by epoch).
"""

from __future__ import annotations

from pathlib import Path

from search.runtime import optuna_compat as compat
from search.runtime.claim import claim_trial
from search.runtime.storage import StudyLock
from search.runtime.study import open_study
from search.space import suggest
from tests.search.helpers import create_tiny_study


def test_a_trial_claimed_beside_a_queued_one_draws_its_own_configuration(
    tmp_path: Path, tiny_data: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'seeds.db'}"
    create_tiny_study(tmp_path, tiny_data, storage, "seeds", trials=6)
    study, config = open_study("seeds", storage, worker=True)
    study.enqueue_trial({"backbone": "small_cnn"})  # dropout and learning rate left open
    lock = StudyLock(compat.storage_of(study), "seeds")
    drawn = []
    for _ in range(3):  # each claim as a worker of its own makes it: a sampler of its own
        trial = claim_trial(study, lock, config)
        assert trial is not None
        chosen = suggest(trial, config.space)
        drawn.append((chosen.dropout, chosen.learning_rate))
    numbers = [t.number for t in study.get_trials(deepcopy=False)]
    assert numbers == [0, 1, 2]
    assert len(set(drawn)) == 3, drawn
