"""Killed workers, interrupts and resume, with real worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.config import load_config
from search.runtime.study import create_study
from search.study_data import prepare
from tests.conftest import run_cli, start_cli
from tests.search.helpers import (
    TINY_CONFIG,
    create_tiny_study,
    running_with_epochs,
    trials_of,
    wait_for,
    wait_for_pause,
    write_config,
)

# Trials long enough not to end between "epoch N reported" and the kill (12 tiny epochs took
# about a second once workers stopped leaking graphs); the next worker trains them out.
LONG_TRIALS = {"training": {"epochs": 40, "early_stopping_patience": 0}}
# Trials that cannot end between "epoch 1 reported" and the signal (a signal after the last
# epoch rightly lets the trial complete); the interrupted worker never trains them out.
UNENDING_TRIALS = {"training": {"epochs": 500, "early_stopping_patience": 0}}


def test_a_worker_killed_mid_trial_is_failed_and_retried_by_the_next(
    tmp_path: Path, tiny_data: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    # No pruner: the retry must run to the end (the median pruner may stop it, fairly).
    create_tiny_study(
        tmp_path, tiny_data, storage, "killed", trials=2, pruner={"name": "none"}, **LONG_TRIALS
    )
    first = start_cli("worker", "--study", "killed", "--storage", storage, "--data", str(tiny_data))
    wait_for(lambda: running_with_epochs(storage, "killed", 2), timeout=120, what="a trial mid-way")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    killed_at = time.monotonic()
    victim = next(t for t in trials_of(storage, "killed") if t.state == TrialState.RUNNING)
    # Its last heartbeat came before the kill: one grace period later (TINY_CONFIG's 3 s)
    # the next worker must see it stale; sooner it is rightly taken for a live worker's.
    grace = TINY_CONFIG["heartbeat"]["grace_period"]
    wait_for(lambda: time.monotonic() > killed_at + grace + 0.5, what="the heartbeat to age")

    second = run_cli("worker", "--study", "killed", "--storage", storage, "--data", str(tiny_data))
    assert second.returncode == 0, second.stderr
    trials = {t.number: t for t in trials_of(storage, "killed")}
    assert trials[victim.number].state == TrialState.FAIL
    retry = next(t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    finished = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(finished) == 2  # the budget is met, the failed trial replaced


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_worker_fails_its_trial_and_queues_it_again(
    tmp_path: Path, tiny_data: Path, signum: signal.Signals, code: int
) -> None:
    storage = f"sqlite:///{tmp_path / 'i.db'}"
    create_tiny_study(tmp_path, tiny_data, storage, "stopped", trials=3, **UNENDING_TRIALS)
    worker = start_cli(
        "worker", "--study", "stopped", "--storage", storage, "--data", str(tiny_data)
    )
    wait_for(
        lambda: running_with_epochs(storage, "stopped", 1), timeout=120, what="a running trial"
    )
    import time

    sent = time.monotonic()
    worker.send_signal(signum)
    _, err = worker.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert worker.returncode == code, err
    assert "Traceback" not in err
    trials = trials_of(storage, "stopped")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert failed[0].user_attrs["fail_reason"] == f"interrupted by {signum.name}"
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == failed[0].params
    # The retry starts clean: the parameters and a link to the failed attempt, nothing else.
    assert waiting[0].user_attrs == {"retry_of": failed[0].number}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_training_still_tells_the_finished_result(
    tmp_path: Path, tiny_data: Path, signum: signal.Signals
) -> None:
    """A signal that arrives after a trial's training ended, before its result is told (a
    test pause holds that window open), lets the worker tell the result, then exit."""
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    create_tiny_study(
        tmp_path,
        tiny_data,
        storage,
        "window",
        trials=2,
        pruner={"name": "none"},
        training={"epochs": 1},
    )
    worker = start_cli(
        "worker",
        "--study",
        "window",
        "--storage",
        storage,
        "--data",
        str(tiny_data),
        env={"TUMOR_SEARCH_TEST_PAUSE": "after-training:4"},
    )
    seen = wait_for_pause(worker, "after-training")
    worker.send_signal(signum)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 128 + signum, seen + err
    trials = trials_of(storage, "window")
    assert trials[0].state == TrialState.COMPLETE and trials[0].value is not None
    assert "history" in trials[0].user_attrs and "rss_mb" in trials[0].user_attrs
    # Nothing failed, nothing queued again, and no second trial started.
    assert [t.state for t in trials] == [TrialState.COMPLETE]


def test_run_again_resumes_to_the_budget_without_restarting(
    tmp_path: Path, tiny_data: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    # No pruner: every trial must complete (the median pruner may stop one, fairly).
    config = write_config(
        tmp_path / "c.yaml", trials=2, training={"epochs": 1}, pruner={"name": "none"}
    )
    args = ("run", "--config", str(config), "--data", str(tiny_data), "--storage", storage)
    assert run_cli(*args).returncode == 0
    first = [(t.number, t.params) for t in trials_of(storage, "tiny")]
    # No --config and no --data: the study resumes with the config (and data path) it holds.
    again = run_cli("run", "--study", "tiny", "--storage", storage, "--trials", "3")
    assert again.returncode == 0, again.stderr
    assert "resuming study 'tiny'" in again.stderr and "2 trials finished" in again.stderr
    trials = trials_of(storage, "tiny")
    assert len(trials) == 3 and [(t.number, t.params) for t in trials[:2]] == first
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_seed_configurations_are_enqueued_once(tmp_path: Path, tiny_data: Path) -> None:
    """The config's `enqueue` entries first, then the seed study's, each once."""
    path = write_config(
        tmp_path / "seeded.yaml",
        trials=4,
        enqueue=[{"backbone": "small_cnn", "learning_rate": 1.0e-3, "head_width": 16}],
        data={"image_size": 75},
        space={
            "backbone": ["small_cnn", "mobilenet", "xception"],
            "head_depth": {"low": 0, "high": 4},
            "head_width": [16, 128],
            "dropout": {"low": 0.0, "high": 0.5},
            "learning_rate": {"low": 1.0e-5, "high": 1.0e-2, "log": True},
        },
    )
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    storage = f"sqlite:///{tmp_path / 'seed.db'}"
    data = prepare(config)
    first = create_study("seeded", storage, config, data)
    assert first.created and first.enqueued == 3
    again = create_study("seeded", storage, config, data)
    assert not again.created and again.enqueued == 0
    waiting = optuna.load_study(study_name="seeded", storage=storage).get_trials(
        states=(TrialState.WAITING,)
    )
    assert waiting[0].system_attrs["fixed_params"] == config.enqueue[0]
    assert waiting[0].user_attrs == {"enqueued": True}
    queued = [t.system_attrs["fixed_params"] for t in waiting[1:]]
    assert [p["backbone"] for p in queued] == ["mobilenet", "xception"]
    assert (
        queued[0] | {"head_depth": 3, "head_width": 128, "dropout": 0.3, "learning_rate": 1e-5}
        == queued[0]
    )
    assert queued[1]["dropout"] == 0.5 and queued[1]["learning_rate"] == 2e-5


def test_a_worker_restarts_its_process_when_memory_grows(tmp_path: Path, tiny_data: Path) -> None:
    """Keras keeps memory across models; the worker restarts itself (same PID) to release it,
    and its --trials limit counts across restarts."""
    import re

    storage = f"sqlite:///{tmp_path / 'm.db'}"
    create_tiny_study(
        tmp_path,
        tiny_data,
        storage,
        "memory",
        trials=5,
        training={"epochs": 1},
        pruner={"name": "none"},
        worker={"max_memory_growth": 1e-6},
    )
    result = run_cli(
        "worker",
        "--study",
        "memory",
        "--storage",
        storage,
        "--data",
        str(tiny_data),
        "--trials",
        "4",
        process=True,  # the restart replaces the process
    )
    assert result.returncode == 0, result.stderr
    # Each process sets its baseline on its first trial and restarts after its second,
    # unless its work is done: trials 1-2, restart, trials 3-4.
    assert result.stderr.count("restarting the worker process") == 1
    pids = set(re.findall(r"worker (\d+) on study", result.stderr))
    assert len(pids) == 1  # exec: the same process, so launchers and signals still reach it
    assert "worker done: 4 completed" in result.stderr
    trials = trials_of(storage, "memory")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    # The restarted process does not draw the first process's configurations again.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4


def test_workers_on_one_machine_share_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --workers N` gives each worker cores/N OpenMP threads unless the user chose."""
    from search.runtime.launcher import WorkerSpec, worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert worker_env(WorkerSpec("w0", None), 8)["OMP_NUM_THREADS"] == "2"
    assert worker_env(WorkerSpec("w0", None), 32)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in worker_env(WorkerSpec("w0", None), 1)
    assert worker_env(WorkerSpec("gpu1", "1"), 2)["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_env(WorkerSpec("w0", None), 8)["OMP_NUM_THREADS"] == "3"
