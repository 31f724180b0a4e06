"""`storage-proxy` and workers with `--storage grpc://HOST:PORT` (search/runtime/proxy.py),
against the CI PostgreSQL: the budget stays exact without a database lock in the workers,
and a killed worker's trial is failed and retried through the proxy's heartbeat records."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.runtime.claim import WORKER_ATTR
from tests.conftest import run_cli, start_cli
from tests.search.helpers import create_tiny_study, running_with_epochs, trials_of, wait_for

SLOW = {"TUMOR_SEARCH_TEST_PAUSE": "epoch-end:1"}
NO_PRUNING = {"pruner": {"name": "none"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_proxy_outlives_its_test() -> Iterator[None]:
    """A test that fails before it stops its proxy would leave it running, holding
    PostgreSQL connections that later tests (and other xdist workers) run short of."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def start_proxy(storage: str, port: int) -> subprocess.Popen[str]:
    proc = start_cli("storage-proxy", "--storage", storage, "--port", str(port))
    _STARTED.append(proc)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert f"on grpc://127.0.0.1:{port} (no authentication" in line, line + proc.stderr.read()
    return proc


@pytest.fixture
def proxy(pg_url: str) -> Iterator[str]:
    """A storage proxy for the CI PostgreSQL; its URL. Stopped by SIGTERM, which it must
    take as its normal end (exit 0)."""
    port = free_port()
    proc = start_proxy(pg_url, port)
    yield f"grpc://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "storage proxy stopped" in err, err


def _name(stem: str) -> str:
    return f"{stem}-{os.getpid()}-{time.time_ns()}"


def _worker(study: str, proxy: str, data: Path) -> subprocess.Popen[str]:
    args = ("worker", "--study", study, "--storage", proxy, "--data", str(data))
    return start_cli(*args, env=SLOW)


def _long(epochs: int) -> dict:
    return {"training": {"epochs": epochs, "early_stopping_patience": 0}, **NO_PRUNING}


def _mid_trial(
    study: str, storage: str, proxy: str, root: Path, data: Path, trials: int, epochs: int
) -> subprocess.Popen[str]:
    """Create the study on `storage`, start a worker through `proxy`, and return it once
    its trial has reported an epoch."""
    create_tiny_study(root, data, storage, study, trials=trials, **_long(epochs))
    worker = _worker(study, proxy, data)
    wait_for(lambda: running_with_epochs(storage, study), timeout=120, what="a trial's epoch")
    return worker


def test_three_workers_through_the_proxy_meet_the_budget_exactly(
    pg_url: str, proxy: str, tmp_path: Path, tiny_data: Path
) -> None:
    study = _name("proxy-budget")
    create_tiny_study(tmp_path, tiny_data, pg_url, study, trials=5, **NO_PRUNING)
    workers = [_worker(study, proxy, tiny_data) for _ in range(3)]
    outputs = [proc.communicate(timeout=300) for proc in workers]
    for proc, (_, err) in zip(workers, outputs, strict=True):
        assert proc.returncode == 0, err
    trials = trials_of(pg_url, study)
    assert len(trials) == 5, [(t.number, t.state) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs[WORKER_ATTR]["pid"] for t in trials}
    assert len(pids) >= 2, pids  # the workers shared the budget
    # The reserved keys never reach the database.
    assert not any(k.startswith("tumor_search:") for t in trials for k in t.system_attrs)
    storage = optuna.storages.RDBStorage(pg_url)
    stored = storage.get_study_system_attrs(storage.get_study_id_from_name(study))
    assert not any(k.startswith("tumor_search:") for k in stored)


@pytest.mark.slow  # a real outage
def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(
    pg_url: str, proxy: str, tmp_path: Path, tiny_data: Path
) -> None:
    study = _name("proxy-stale")
    first = _mid_trial(study, pg_url, proxy, tmp_path, tiny_data, trials=2, epochs=4)
    first.kill()
    first.communicate(timeout=30)
    # The proxy recorded the killed worker's heartbeats: the second worker's claims ask the
    # proxy to fail stale trials, which it does once the grace period (3 s) has passed.
    second = _worker(study, proxy, tiny_data)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    trials = trials_of(pg_url, study)
    killed = trials[0]
    assert killed.state == TrialState.FAIL, [(t.number, t.state) for t in trials]
    # Failed by its stale heartbeat (which the proxy recorded), not as an orphan that
    # never beat (the orphan path records a fail_reason).
    assert "fail_reason" not in killed.user_attrs, killed.user_attrs
    retries = [t for t in trials if killed.number in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert retries[0].params == killed.params


def test_sigterm_through_the_proxy_fails_and_requeues_the_trial(
    pg_url: str, proxy: str, tmp_path: Path, tiny_data: Path
) -> None:
    study = _name("proxy-sigterm")
    worker = _mid_trial(study, pg_url, proxy, tmp_path, tiny_data, trials=1, epochs=6)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143 and "Traceback" not in err, err
    failed, queued = trials_of(pg_url, study)
    assert failed.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert failed.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    assert queued.params == failed.params


@pytest.mark.slow  # a real outage
def test_a_worker_rides_out_a_restart_of_its_proxy(
    pg_url: str, tmp_path: Path, tiny_data: Path
) -> None:
    """The proxy going away mid-trial is an outage like the database's: the worker's storage
    calls wait for it (UNAVAILABLE is transient), and the trial ends as if nothing happened."""
    study = _name("proxy-restart")
    port = free_port()
    first = start_proxy(pg_url, port)
    url = f"grpc://127.0.0.1:{port}"
    worker = _mid_trial(study, pg_url, url, tmp_path, tiny_data, trials=1, epochs=6)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    time.sleep(4)  # at least one epoch's report meets no proxy
    second = start_proxy(pg_url, port)
    try:
        _, err = worker.communicate(timeout=300)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "unreachable" in err and "is back after" in err, err
    (trial,) = trials_of(pg_url, study)
    assert trial.state == TrialState.COMPLETE and len(trial.intermediate_values) == 6


@pytest.mark.slow  # a real outage
def test_a_database_outage_behind_the_proxy_is_ridden_out(tmp_path: Path, tiny_data: Path) -> None:
    """The database behind the proxy stops for 6 s mid-trial: the proxy marks the errors
    transient, both workers wait and go on, and neither's trial is taken for stale once the
    database is back (heartbeats are judged only a grace period after an outage)."""
    from tests.search.owned_postgres import OwnedPostgres

    server = OwnedPostgres()
    try:
        create_tiny_study(tmp_path, tiny_data, server.url, "behind", trials=2, **_long(6))
        port = free_port()
        proxy = start_proxy(server.url, port)
        workers = [_worker("behind", f"grpc://127.0.0.1:{port}", tiny_data) for _ in range(2)]

        def both_running() -> bool:
            trials = trials_of(server.url, "behind")
            return (
                sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in trials)
                == 2
            )

        wait_for(both_running, timeout=120, what="two trials mid-way")
        server.stop()
        time.sleep(6)
        server.start()
        outputs = [proc.communicate(timeout=300)[1] for proc in workers]
        proxy.send_signal(signal.SIGTERM)
        proxy.communicate(timeout=30)
        for proc, err in zip(workers, outputs, strict=True):
            assert proc.returncode == 0, err
        assert any("unreachable" in err and "is back after" in err for err in outputs), outputs
        trials = trials_of(server.url, "behind")
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, trials
        assert all(len(t.intermediate_values) == 6 for t in trials)
    finally:
        server.remove()


def test_proxy_urls_elsewhere_and_unreachable_proxies_are_one_line_errors(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    status = run_cli("status", "--study", "s", "--storage", f"grpc://127.0.0.1:{port}")
    assert (
        status.returncode == 2 and "is a storage proxy, which serves `worker` only" in status.stderr
    )
    malformed = run_cli("worker", "--study", "s", "--storage", "grpc://127.0.0.1:http")
    assert malformed.returncode == 2 and "malformed storage proxy URL" in malformed.stderr
    started = time.monotonic()
    worker = run_cli(
        "worker", "--study", "s", "--storage", f"grpc://127.0.0.1:{port}", "--storage-retry", "2"
    )
    assert worker.returncode == 75, worker.stderr
    assert "no storage proxy answers" in worker.stderr and time.monotonic() - started < 60
    for result in (status, malformed, worker):
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr


def test_storage_proxy_refuses_a_missing_database_and_a_port_in_use(tmp_path: Path) -> None:
    missing = run_cli("storage-proxy", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 2 and "no study database" in missing.stderr, missing.stderr
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.storages.RDBStorage(url)  # an empty study database
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("storage-proxy", "--storage", url, "--port", str(port), timeout=60)
    assert result.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_proxy_refuses_a_new_trial_past_the_budget_but_queues_retries(tmp_path: Path) -> None:
    """What keeps the budget exact without a lock in the workers, on its own: the proxy
    counts the trials under the study lock and refuses the one too many."""
    from search.runtime.proxy import budget_refused, connect
    from search.runtime.study import BUDGET_ATTR

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="budget", storage=url)
    study.set_user_attr(BUDGET_ATTR, 2)
    port = free_port()
    proc = start_proxy(url, port)
    try:
        client = connect(f"grpc://127.0.0.1:{port}", "127.0.0.1", port, None)
        study_id = client.get_study_id_from_name("budget")
        first = client.create_new_trial(study_id)
        client.create_new_trial(study_id)
        with pytest.raises(KeyError) as refused:
            client.create_new_trial(study_id)
        assert budget_refused(refused.value)
        # A failed trial queued again (a template) is not a new claim: never refused.
        client.set_trial_state_values(first, TrialState.FAIL)
        template = client.get_trial(first)
        client.create_new_trial(study_id, template_trial=template)
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert len(optuna.load_study(study_name="budget", storage=url).trials) == 3


def test_concurrent_claims_through_the_proxy_meet_the_budget_exactly(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Eight claims at once through the proxy: on a fresh study with a budget of 2, two win
    (the workers' own count cannot tell: they all see the budget open; the proxy's lock
    does); then with the budget used and one failed trial queued again, one wins it
    (SQLite alone would let several takers win a queued trial)."""
    import threading

    from search.runtime import optuna_compat as compat
    from search.runtime.claim import claim_trial
    from search.runtime.storage import StudyLock
    from search.runtime.study import open_study

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    create_tiny_study(tmp_path, tiny_data, url, "race", trials=2, **NO_PRUNING)
    port = free_port()
    proc = start_proxy(url, port)

    def race() -> list[int]:
        opened = [open_study("race", f"grpc://127.0.0.1:{port}", worker=True) for _ in range(8)]
        barrier, won = threading.Barrier(len(opened)), []

        def claim(study: optuna.Study, config: object) -> None:
            lock = StudyLock(study._storage, "race")
            barrier.wait()
            trial = claim_trial(study, lock, config)  # type: ignore[arg-type]
            if trial is not None:
                won.append(trial.number)

        threads = [threading.Thread(target=claim, args=pair) for pair in opened]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        return sorted(won)

    try:
        assert race() == [0, 1]
        study = optuna.load_study(study_name="race", storage=url)
        assert compat.fail_frozen(study, study.trials[0], "test")
        assert compat.retry_trial(study, study.trials[0], None)
        assert race() == [2]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    states = [t.state for t in optuna.load_study(study_name="race", storage=url).trials]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING], states


def test_a_proxy_on_a_fresh_database_creates_its_tables(pg_url: str) -> None:
    """The proxy may be the first to reach a new database: it serves it, tables created
    (it once refused with 'relation "version_info" does not exist')."""
    import sqlalchemy

    name = f"fresh_{os.getpid()}_{time.time_ns()}"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        port = free_port()
        proc = start_proxy(url, port)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert optuna.get_all_study_names(url) == []
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
