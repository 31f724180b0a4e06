"""Several worker processes on one study: exact budget, distinct trials, one worker per GPU."""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import assert_bad_input, run_cli, start_cli
from tests.search.helpers import (
    create_tiny_study,
    running_with_epochs,
    trials_of,
    wait_for,
    write_config,
)

# One epoch, and no pruner: these tests count COMPLETE trials, which must not depend on
# whether the median pruner happens to stop one.
ONE_EPOCH = {"training": {"epochs": 1, "early_stopping_patience": 0}, "pruner": {"name": "none"}}


def _assert_budget_met_exactly(storage: str, name: str, budget: int) -> None:
    trials = trials_of(storage, name)
    assert sorted(t.number for t in trials) == list(range(budget))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_two_postgres_workers_meet_the_budget_exactly(
    tmp_path: Path, tiny_data: Path, pg_url: str
) -> None:
    name = f"pair-{time.time_ns()}"
    try:
        create_tiny_study(tmp_path, tiny_data, pg_url, name, trials=5, **ONE_EPOCH)
        args = ("worker", "--study", name, "--storage", pg_url, "--data", str(tiny_data))
        procs = [start_cli(*args) for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
            assert "Traceback" not in err
        _assert_budget_met_exactly(pg_url, name, 5)
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)


def test_two_sqlite_workers_from_run_meet_the_budget_exactly(
    tmp_path: Path, tiny_data: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = write_config(tmp_path / "c.yaml", trials=5, **ONE_EPOCH)
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--data",
        str(tiny_data),
        "--storage",
        storage,
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "[w0]" in result.stderr and "[w1]" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_budget_met_exactly(storage, "tiny", 5)


def test_two_runs_started_together_create_one_study(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'fresh.db'}"
    config = write_config(tmp_path / "c.yaml", trials=3, **ONE_EPOCH)
    args = ("run", "--config", str(config), "--data", str(tiny_data), "--storage", storage)
    procs = [start_cli(*args, "--study", "together") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert optuna.get_all_study_names(storage) == ["together"]
    _assert_budget_met_exactly(storage, "together", 3)


def test_one_prefixed_worker_per_gpu_all_stopped_by_ctrl_c(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    config = write_config(
        tmp_path / "c.yaml", trials=20, training={"epochs": 40, "early_stopping_patience": 0}
    )
    proc = start_cli(
        "run",
        "--config",
        str(config),
        "--data",
        str(tiny_data),
        "--storage",
        storage,
        "--gpus",
        "0,1",
    )

    def both_running() -> bool:
        try:
            trials = trials_of(storage, "tiny")
        except KeyError:
            return False
        return (
            sum(t.state == TrialState.RUNNING and len(t.intermediate_values) > 0 for t in trials)
            == 2
        )

    wait_for(
        lambda: (tmp_path / "g.db").exists() and both_running(),
        timeout=180,
        what="two running trials",
    )
    assert running_with_epochs(storage, "tiny", 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    for gpu in ("0", "1"):
        assert f"[gpu{gpu}]" in err and f"CUDA_VISIBLE_DEVICES={gpu}" in err
    trials = trials_of(storage, "tiny")
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], err
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2, err
    reasons = [t.user_attrs["fail_reason"] for t in interrupted]
    assert reasons == ["interrupted by SIGINT"] * 2, err


@pytest.mark.parametrize("bad", ["0,,x", "1,1"])
def test_bad_gpu_lists_are_refused(bad: str) -> None:
    assert_bad_input(run_cli("run", "--gpus", bad), "--gpus")


def test_worker_timeout_stops_starting_trials(tmp_path: Path, tiny_data: Path) -> None:
    """`worker --timeout S` starts no trial once S seconds have passed: with a budget far
    beyond what fits, it stops early, lets the running trial finish, and no trial starts
    later than S seconds after the process was launched (plus slack for its start-up)."""
    storage = f"sqlite:///{tmp_path / 't.db'}"
    # 15 s: room for the first trial to start on a busy machine (3-4 s here when idle). The
    # slack covers the worker's own start-up before it starts counting, and a claim.
    budget, timeout, slack = 50, 15.0, 6.0
    create_tiny_study(
        tmp_path,
        tiny_data,
        storage,
        "timed",
        trials=budget,
        training={"epochs": 2, "early_stopping_patience": 0},
        pruner={"name": "none"},
    )
    launched = dt.datetime.now()  # Optuna stamps trials with naive local time, as here
    result = run_cli(
        "worker",
        "--study",
        "timed",
        "--storage",
        storage,
        "--data",
        str(tiny_data),
        "--timeout",
        str(timeout),
        timeout=timeout + 240,
    )
    assert result.returncode == 0, result.stderr
    assert "timeout" in result.stderr
    trials = trials_of(storage, "timed")
    assert 1 <= len(trials) < budget
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    latest_start = max(t.datetime_start for t in trials)
    assert latest_start <= launched + dt.timedelta(seconds=timeout + slack), latest_start - launched
