"""Two `run`s started together on a new study: the study, its config and its fingerprint
appear together, so the second never sees a half-made study (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import start_cli
from tests.search.helpers import trials_of, wait_for_pause, write_config


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_run_that_meets_a_study_being_created_waits_for_it(
    tmp_path: Path, tiny_data: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """The first run pauses (a test-only pause) between writing the study row and its
    attributes; the second run starts in that window and must still succeed."""
    storage = (
        f"sqlite:///{tmp_path / 'race.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    name = f"race-{time.time_ns()}"
    config = write_config(
        tmp_path / "c.yaml", trials=2, training={"epochs": 1}, pruner={"name": "none"}
    )
    args = ("run", "--config", str(config), "--data", str(tiny_data), "--storage", storage)
    args += ("--study", name)
    try:
        first = start_cli(*args, env={"TUMOR_SEARCH_TEST_PAUSE": "study-row-written:4"})
        seen = wait_for_pause(first, "study-row-written")
        second = start_cli(*args)
        out2, err2 = second.communicate(timeout=300)
        out1, err1 = first.communicate(timeout=300)
        assert first.returncode == 0, seen + err1
        assert second.returncode == 0, err2
        assert "resuming study" in err2
        trials = trials_of(storage, name)
        assert sorted(t.number for t in trials) == [0, 1]
        assert all(t.state == TrialState.COMPLETE for t in trials)
    finally:
        if backend == "postgresql":
            optuna.delete_study(study_name=name, storage=storage)
