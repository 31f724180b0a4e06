"""Workers ride out real faults: a PostgreSQL restart mid-trial, an outage past the retry
limit, a worker started before its database, an SQLite file locked by another process.

Trials are slowed by a test-only pause after each epoch (TUMOR_SEARCH_TEST_PAUSE) instead
of real training; the heartbeat is shortened by the tiny config (1 s, grace 3 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import start_cli
from tests.search.helpers import (
    create_cli,
    create_tiny_study,
    running_with_epochs,
    trials_of,
    wait_for,
    wait_for_pause,
    write_config,
)
from tests.search.owned_postgres import OwnedPostgres

# Real outages of a test-owned PostgreSQL: `make test-all` (CI) runs them.
pytestmark = pytest.mark.slow

SLOW_EPOCHS = {"TUMOR_SEARCH_TEST_PAUSE": "epoch-end:1"}
NO_PRUNING = {"pruner": {"name": "none"}}


@pytest.fixture
def owned_pg() -> Iterator[OwnedPostgres]:
    server = OwnedPostgres()
    try:
        yield server
    finally:
        server.remove()


def _worker(storage: str, study: str, data: Path, *extra: str) -> subprocess.Popen[str]:
    args = ("worker", "--study", study, "--storage", storage, "--data", str(data), *extra)
    return start_cli(*args, env=SLOW_EPOCHS)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tumor-search: error:")]


def _running(storage: str, study: str) -> int:
    return sum(
        t.state == TrialState.RUNNING and bool(t.intermediate_values)
        for t in trials_of(storage, study)
    )


def test_a_database_restart_mid_trial_is_ridden_out(
    tmp_path: Path, tiny_data: Path, owned_pg: OwnedPostgres
) -> None:
    """Two workers, and an outage far longer than the heartbeat's grace period (3 s): the
    first worker back must not take the other's trial for a dead worker's."""
    create_tiny_study(
        tmp_path, tiny_data, owned_pg.url, "restart", trials=2,
        training={"epochs": 6, "early_stopping_patience": 0}, **NO_PRUNING,
    )  # fmt: skip
    workers = [_worker(owned_pg.url, "restart", tiny_data) for _ in range(2)]
    wait_for(lambda: _running(owned_pg.url, "restart") == 2, what="two trials mid-way")
    owned_pg.stop()
    time.sleep(20)
    owned_pg.start()
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert "Traceback" not in err
        assert "unreachable" in err and "is back after" in err, err
    trials = trials_of(owned_pg.url, "restart")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.state for t in trials]
    # Every epoch of the trials that trained through the outage was reported.
    assert all(len(t.intermediate_values) == 6 for t in trials)


def test_an_interrupt_ends_the_wait_for_the_storage_at_once(
    tmp_path: Path, tiny_data: Path, owned_pg: OwnedPostgres
) -> None:
    create_tiny_study(
        tmp_path, tiny_data, owned_pg.url, "stop", trials=1,
        training={"epochs": 6, "early_stopping_patience": 0}, **NO_PRUNING,
    )  # fmt: skip
    worker = _worker(owned_pg.url, "stop", tiny_data)
    wait_for(lambda: running_with_epochs(owned_pg.url, "stop", 1), what="a trial mid-way")
    owned_pg.stop()
    seen = []
    assert worker.stderr is not None
    for line in worker.stderr:
        seen.append(line)
        if "unreachable" in line:
            break
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 143, "".join(seen) + err
    assert time.monotonic() - sent < 30
    assert "Traceback" not in err


def test_an_outage_past_the_limit_exits_75_and_the_trial_is_retried(
    tmp_path: Path, tiny_data: Path, owned_pg: OwnedPostgres
) -> None:
    config = write_config(
        tmp_path / "outage.yaml", trials=1, training={"epochs": 6, "early_stopping_patience": 0},
        storage={"retry_seconds": 3}, **NO_PRUNING,
    )  # fmt: skip
    assert create_cli("outage", config, tiny_data, owned_pg.url).returncode == 0
    worker = _worker(owned_pg.url, "outage", tiny_data)
    wait_for(lambda: running_with_epochs(owned_pg.url, "outage", 1), what="a trial mid-way")
    owned_pg.stop()
    stopped = time.monotonic()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 75, err
    assert time.monotonic() - stopped < 60
    assert "Traceback" not in err
    errors = _errors(err)
    assert len(errors) == 1, err
    assert f"127.0.0.1:{owned_pg.port}" in errors[0] and "unreachable for" in errors[0]

    owned_pg.start()
    second = _worker(owned_pg.url, "outage", tiny_data)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    trials = {t.number: t for t in trials_of(owned_pg.url, "outage")}
    assert trials[0].state == TrialState.FAIL  # failed by the heartbeat
    retry = next(t for t in trials.values() if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]


def test_a_worker_started_before_its_database_waits_for_it(
    tmp_path: Path, tiny_data: Path, owned_pg: OwnedPostgres
) -> None:
    create_tiny_study(tmp_path, tiny_data, owned_pg.url, "early", trials=1, **NO_PRUNING)
    owned_pg.stop()
    worker = _worker(owned_pg.url, "early", tiny_data)
    time.sleep(10)
    assert worker.poll() is None, worker.communicate()[1]
    owned_pg.start()
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "unreachable (" in err and "retrying for up to 120s" in err, err
    assert "is back after" in err
    assert [t.state for t in trials_of(owned_pg.url, "early")] == [TrialState.COMPLETE]


def _epochs_reported(storage: str, study: str) -> int:
    return sum(len(t.intermediate_values) for t in trials_of(storage, study))


def test_an_sqlite_file_locked_by_another_process_is_waited_for(
    tmp_path: Path, tiny_data: Path
) -> None:
    db = tmp_path / "locked.db"
    storage = f"sqlite:///{db}"
    create_tiny_study(
        tmp_path,
        tiny_data,
        storage,
        "locked",
        trials=2,
        training={"epochs": 4, "early_stopping_patience": 0},
        **NO_PRUNING,
    )
    worker = _worker(storage, "locked", tiny_data)
    wait_for(lambda: running_with_epochs(storage, "locked", 1), what="a trial mid-way")
    hold = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(10)\n"
        "c.execute('COMMIT')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    # Epochs take about a second, but none is reported while the file is locked.
    reported = _epochs_reported(storage, "locked")
    time.sleep(6)
    assert _epochs_reported(storage, "locked") == reported
    assert holder.wait(timeout=60) == 0
    assert worker.poll() is None  # it waited rather than failing
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    trials = trials_of(storage, "locked")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, err


def test_a_worker_whose_trial_another_worker_failed_gives_it_up_quietly(
    tmp_path: Path, tiny_data: Path
) -> None:
    """What a worker finds after a long outage: its heartbeat went stale, and another
    worker failed its trial and queued it again. (Frozen with SIGSTOP here, the same
    staleness without stopping a database.)"""
    storage = f"sqlite:///{tmp_path / 'stale.db'}"
    create_tiny_study(
        tmp_path, tiny_data, storage, "stale", trials=2,
        training={"epochs": 5, "early_stopping_patience": 0}, **NO_PRUNING,
    )  # fmt: skip
    first = _worker(storage, "stale", tiny_data)
    # Frozen while it sleeps between epochs, not in the middle of a storage write.
    seen = wait_for_pause(first, "epoch-end")
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(4)  # past the grace period of 3 s
        second = _worker(storage, "stale", tiny_data, "--trials", "1")
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    err = seen + err
    assert first.returncode == 0, err
    assert "[trial 0] given up: another worker failed it" in err, err
    assert "Traceback" not in err
    trials = trials_of(storage, "stale")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].system_attrs.get("failed_trial") == 0
