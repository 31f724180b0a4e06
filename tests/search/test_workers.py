"""Several worker processes on one study: exact budget, distinct trials, one worker per GPU."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli, start_cli
from tests.search.helpers import (
    create_tiny_study,
    running_with_epochs,
    trials_of,
    wait_for,
    write_config,
)

ONE_EPOCH = {"training": {"epochs": 1, "early_stopping_patience": 0}}


def _two_workers_meet_the_budget_exactly(storage: str, root: Path, data: Path, name: str) -> None:
    create_tiny_study(root, data, storage, name, trials=5, **ONE_EPOCH)
    procs = [
        start_cli("worker", "--study", name, "--storage", storage, "--data", str(data))
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    trials = trials_of(storage, name)
    assert len(trials) == 5
    assert sorted(t.number for t in trials) == list(range(5))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Both workers took part (each decodes once, so the slower start still gets trials).
    assert all("trials done" in err for _, err in outputs)


def test_two_sqlite_workers_meet_the_budget_exactly(tmp_path: Path, tiny_data: Path) -> None:
    _two_workers_meet_the_budget_exactly(
        f"sqlite:///{tmp_path / 's.db'}", tmp_path, tiny_data, "pair"
    )


def test_two_postgres_workers_meet_the_budget_exactly(
    tmp_path: Path, tiny_data: Path, pg_url: str
) -> None:
    name = f"pair-{time.time_ns()}"
    try:
        _two_workers_meet_the_budget_exactly(pg_url, tmp_path, tiny_data, name)
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)


def test_two_runs_started_together_create_one_study(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'fresh.db'}"
    config = write_config(tmp_path / "c.yaml", trials=3, **ONE_EPOCH)
    args = (
        "run",
        "--config",
        str(config),
        "--data",
        str(tiny_data),
        "--storage",
        storage,
        "--study",
        "together",
    )
    procs = [start_cli(*args) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert optuna.get_all_study_names(storage) == ["together"]
    trials = trials_of(storage, "together")
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)


def test_run_with_gpus_starts_one_prefixed_worker_per_gpu(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    config = write_config(tmp_path / "c.yaml", trials=3, **ONE_EPOCH)
    result = run_cli(
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
    assert result.returncode == 0, result.stderr
    assert "[gpu0]" in result.stderr and "[gpu1]" in result.stderr
    assert "CUDA_VISIBLE_DEVICES=0" in result.stderr and "CUDA_VISIBLE_DEVICES=1" in result.stderr
    assert len(trials_of(storage, "tiny")) == 3


def test_ctrl_c_stops_every_gpu_worker_cleanly(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'i.db'}"
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
    wait_for(
        lambda: (tmp_path / "i.db").exists() and running_with_epochs(storage, "tiny", 1),
        timeout=180,
        what="a running trial",
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    trials = trials_of(storage, "tiny")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all(
        "interrupted by SIGINT" in t.user_attrs["fail_reason"] for t in interrupted
    )


@pytest.mark.parametrize("bad", ["0,,x", "1,1"])
def test_bad_gpu_lists_are_refused(bad: str) -> None:
    from tests.conftest import assert_bad_input

    assert_bad_input(run_cli("run", "--gpus", bad), "--gpus")
