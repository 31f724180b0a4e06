"""Which storage errors are retried, the retry policy, and retries that must be idempotent.

The errors are real ones (a refused port, an unknown host, a locked SQLite file); where a
commit must land while its answer is lost, a real storage call runs and then the real
error of a dropped connection is raised after it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.config import StudyConfig
from search.errors import ConfigError
from search.runtime import optuna_compat as compat
from search.runtime.claim import ORPHAN_REASON, claim_trial
from search.runtime.outage import Outage, StorageUnavailable, is_transient
from search.runtime.storage import StudyLock
from search.runtime.study import open_study
from tests.conftest import run_cli
from tests.search.helpers import REFUSED_URL, TINY_CONFIG, create_tiny_study, database_error


@pytest.fixture(scope="module")
def refused() -> Exception:
    return database_error(REFUSED_URL, connect_timeout=5)


def _locked_error(tmp_path: Path) -> Exception:
    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0.1})
        try:
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
        except Exception as exc:  # noqa: BLE001
            return exc
        finally:
            engine.dispose()
    finally:
        holder.execute("COMMIT")
        holder.close()
    raise AssertionError("the locked SQLite file accepted a write")


def test_transient_and_permanent_errors_are_told_apart(tmp_path: Path, refused: Exception) -> None:
    assert is_transient(refused)
    assert is_transient(_locked_error(tmp_path))
    assert not is_transient(database_error("postgresql+psycopg2://u@no-such-host.invalid/db"))
    assert not is_transient(ValueError("connection refused"))  # not a database error


def test_a_missing_database_is_not_waited_for(pg_url: str) -> None:
    url = sqlalchemy.engine.make_url(pg_url).set(database="no_such_database_here")
    assert not is_transient(database_error(url.render_as_string(hide_password=False)))


def test_the_outage_is_retried_until_the_storage_is_back(
    refused: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = [refused, refused]

    def flaky() -> int:
        if failures:
            raise failures.pop()
        return 42

    outage = Outage("postgresql://u:***@db/x", seconds=30)
    assert outage.call(flaky) == 42
    assert failures == [] and outage.retries == 2  # both injected errors were raised
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "unreachable (connection to server" in lines[0] and "up to 30s" in lines[0]
    assert "is back after" in lines[1]


def test_an_outage_past_the_limit_gives_up_and_every_later_call_fails_at_once(
    refused: Exception,
) -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise refused

    outage = Outage("postgresql://u:***@db/x", seconds=0.5)
    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"unreachable for 0\.\ds .*giving up"):
        outage.call(down)
    assert 0.5 <= time.monotonic() - start < 3
    made = len(calls)
    with pytest.raises(StorageUnavailable):
        outage.call(down)
    assert len(calls) == made


def test_other_errors_are_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        Outage("db", seconds=30).call(broken)
    assert calls == [1]


def test_a_negative_retry_limit_is_refused() -> None:
    raw = {**TINY_CONFIG, "storage": {"retry_seconds": -1}}
    with pytest.raises(ConfigError, match="storage.retry_seconds"):
        StudyConfig.from_dict(raw)
    assert StudyConfig.from_dict(TINY_CONFIG).storage.retry_seconds == 120


def test_a_worker_waits_for_a_refused_database_then_exits_75() -> None:
    url = "postgresql+psycopg2://alice:topsecret@127.0.0.1:1/db"
    start = time.monotonic()
    result = run_cli("worker", "--study", "s", "--storage", url, "--storage-retry", "1")
    assert result.returncode == 75, result.stderr
    assert 1 <= time.monotonic() - start < 60
    errors = [line for line in result.stderr_lines if line.startswith("tumor-search: error:")]
    assert len(errors) == 1 and "alice:***@127.0.0.1:1" in errors[0], result.stderr
    assert "giving up" in errors[0] and "Connection refused" in errors[0], result.stderr
    waited = [line for line in result.stderr_lines if "retrying for up to 1s" in line]
    assert len(waited) == 1 and "unreachable (connection to server" in waited[0], result.stderr
    assert "topsecret" not in result.stderr and "Traceback" not in result.stderr


def test_a_worker_with_an_unknown_host_exits_2_at_once() -> None:
    url = "postgresql+psycopg2://alice@no-such-host.invalid/db"
    result = run_cli("worker", "--study", "s", "--storage", url)
    assert result.returncode == 2, result.stderr
    assert "could not translate host name" in result.stderr
    assert "retrying" not in result.stderr


class _AnswerLost:
    """A real RDBStorage whose named method, once, runs and commits, and then raises the
    error of a dropped connection: a retry must cope with a first attempt that landed."""

    def __init__(self, storage: Any, method: str, error: Exception) -> None:
        self._storage, self._method, self._error = storage, method, error
        self.fired = 0  # errors raised after a call that landed

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._storage, name)
        if name != self._method or self._error is None:
            return attr

        def landed_then_lost(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            error, self._error = self._error, None
            if error is None:  # the retry, holding the same function
                return result
            self.fired += 1
            raise error

        return landed_then_lost


def _study_losing(tmp_path: Path, data: Path, method: str, error: Exception) -> Any:
    storage = f"sqlite:///{tmp_path / 'lost.db'}"
    create_tiny_study(tmp_path, data, storage, "lost", trials=4)
    study, config = open_study("lost", storage, worker=True)
    cached = compat.storage_of(study)
    retrying = cached._backend
    retrying.inner = _AnswerLost(retrying.inner, method, error)
    return study, config


def _injected(study: Any) -> _AnswerLost:
    """The fault injector `_study_losing` put under the study's retrying storage."""
    injector = compat.storage_of(study)._backend.inner
    assert isinstance(injector, _AnswerLost)
    return injector


def test_a_retried_claim_leaves_a_double_that_a_later_claim_fails_outside_the_budget(
    tmp_path: Path, tiny_data: Path, refused: Exception
) -> None:
    study, config = _study_losing(tmp_path, tiny_data, "_create_new_trial", refused)
    lock = StudyLock(compat.storage_of(study), "lost")
    first = claim_trial(study, lock, config)
    assert _injected(study).fired == 1 and compat.outage_of(study).retries == 1
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.RUNNING]
    assert first.number == 1  # trial 0 is the double: started, but its answer was lost
    ids = [compat.trial_id(t) for t in trials]
    assert compat.without_heartbeat(study, ids) == [ids[0]]
    claim_trial(study, lock, config)  # younger than the grace period: left alone
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING
    time.sleep(config.heartbeat.grace_period + 0.5)
    claim_trial(study, lock, config)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == ORPHAN_REASON
    assert trials[1].state == TrialState.RUNNING  # it has a heartbeat: not an orphan
    # A new trial's double is not queued again (its parameters were only a draw) and does
    # not count against the budget.
    assert not any(t.user_attrs.get("retry_of") == 0 for t in trials)
    from search.runtime.study import budget_used

    assert budget_used(trials) == len(trials) - 1


def test_a_retried_last_claim_keeps_the_budget_exact(
    tmp_path: Path, tiny_data: Path, refused: Exception
) -> None:
    """The claim of the budget's last trial loses its answer: the retry creates a second
    trial, and the double, once failed, must not run as one trial past the budget."""
    study, config = _study_losing(tmp_path, tiny_data, "_create_new_trial", refused)
    lock = StudyLock(compat.storage_of(study), "lost")
    retrying = compat.storage_of(study)._backend
    injector, retrying.inner = retrying.inner, retrying.inner._storage
    for _ in range(3):  # trials 0-2 of the budget of 4, claimed untouched
        assert claim_trial(study, lock, config) is not None
    retrying.inner = injector
    last = claim_trial(study, lock, config)
    assert injector.fired == 1 and last.number == 4  # trial 3 is the double
    time.sleep(config.heartbeat.grace_period + 0.5)
    assert claim_trial(study, lock, config) is None  # fails the double; the budget is met
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert trials[3].state == TrialState.FAIL
    assert trials[3].user_attrs["fail_reason"] == ORPHAN_REASON


def test_a_retried_tell_whose_commit_landed_is_done(
    tmp_path: Path, tiny_data: Path, refused: Exception
) -> None:
    study, config = _study_losing(tmp_path, tiny_data, "set_trial_state_values", refused)
    trial = compat.ask(study)  # the first state change (to RUNNING) is not the lost one
    compat.tell(study, trial, TrialState.COMPLETE, 0.5, "")
    # The commit landed, its answer was lost, and the tell was retried.
    assert _injected(study).fired == 1 and compat.outage_of(study).retries == 1
    assert study.get_trials(deepcopy=False)[0].state == TrialState.COMPLETE
    assert study.get_trials(deepcopy=False)[0].value == 0.5


def test_a_retried_queueing_whose_commit_landed_queues_once(
    tmp_path: Path, tiny_data: Path, refused: Exception
) -> None:
    study, _ = _study_losing(tmp_path, tiny_data, "_create_new_trial", refused)
    storage = compat.storage_of(study)
    retrying = storage._backend
    retrying.inner = retrying.inner._storage  # the first claim goes through untouched
    trial = compat.ask(study)
    compat.fail_trial(study, trial, "a test")
    retrying.inner = _AnswerLost(retrying.inner, "_create_new_trial", refused)
    assert compat.retry_later(study, trial, max_retry=3)
    assert _injected(study).fired == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert compat.outage_of(study).retries == 1
