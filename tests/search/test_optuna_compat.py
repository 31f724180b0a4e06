"""The retry of failed trials, on a real Optuna storage: one function for the heartbeat
(a dead worker) and for interrupts, which copies parameters only and counts every retry."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.runtime.optuna_compat import RETRY_OF_ATTR, TOKEN_ATTR, enable_heartbeat, retry_trial
from search.runtime.storage import open_storage


def _study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    return optuna.create_study(study_name="r", storage=storage)


def _failed(study: optuna.Study, **system_attrs: object) -> optuna.trial.FrozenTrial:
    study.add_trial(
        optuna.create_trial(
            state=TrialState.FAIL,
            params={"lr": 0.01},
            distributions={"lr": FloatDistribution(1e-4, 1.0, log=True)},
            user_attrs={"fail_reason": "interrupted by SIGINT", "history": {"loss": [1.0]}},
            system_attrs=system_attrs,
        )
    )
    return study.trials[-1]


def test_a_retry_inherits_the_parameters_and_a_link_only(tmp_path: Path) -> None:
    study = _study(tmp_path)
    failed = _failed(study, fixed_params={"lr": 0.01})
    assert retry_trial(study, failed, max_retry=3)
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == {"lr": 0.01}
    assert retry.user_attrs == {RETRY_OF_ATTR: failed.number}
    attrs = dict(retry.system_attrs)
    assert len(attrs.pop(TOKEN_ATTR)) == 32  # a retried queueing finds its trial by it
    assert attrs == {"failed_trial": failed.number, "retry_history": [failed.number]}
    # Optuna's own readers of the retry chain still work.
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0


def test_max_retry_counts_every_retry_of_one_trial(tmp_path: Path) -> None:
    study = _study(tmp_path)
    first = _failed(study)
    assert retry_trial(study, first, max_retry=2)
    second = _failed(study, **study.trials[-1].system_attrs)  # the retry failed too
    assert retry_trial(study, second, max_retry=2)
    third = _failed(study, **study.trials[-1].system_attrs)
    assert not retry_trial(study, third, max_retry=2)
    assert study.trials[-1].number == third.number  # nothing queued
    assert retry_trial(study, third, max_retry=None)


def test_the_heartbeat_retries_a_stale_trial_through_the_same_function(tmp_path: Path) -> None:
    study = _study(tmp_path)
    enable_heartbeat(study._storage, interval=1, grace_period=1, max_retry=1)
    trial = study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)})
    trial.set_user_attr("history", {"loss": [2.0]})
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    stale, retry = study.trials
    assert stale.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == stale.params and retry.user_attrs == {RETRY_OF_ATTR: stale.number}
    # The retry is claimed, goes stale too, and is not retried again (max_retry 1).
    claimed = study.ask()
    assert claimed.number == retry.number
    study._storage.record_heartbeat(claimed._trial_id)
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_the_private_attributes_relied_on(tmp_path: Path) -> None:
    """`study._storage` wraps an RDBStorage (`_backend`) and `trial._trial_id` is the id
    the storage knows the trial by."""
    from search.runtime.optuna_compat import rdb, storage_of, trial_id

    study = _study(tmp_path)
    assert isinstance(rdb(storage_of(study)), optuna.storages.RDBStorage)
    trial = study.ask()
    assert storage_of(study).get_trial(trial_id(trial)).number == trial.number
    assert hasattr(rdb(storage_of(study)), "remove_session")


def test_heartbeat_thread_records_beats_that_keep_a_trial_fresh(tmp_path: Path) -> None:
    from search.runtime.optuna_compat import Heartbeat, fail_stale_trials

    study = _study(tmp_path)
    enable_heartbeat(study._storage, interval=1, grace_period=2, max_retry=1)
    trial = study.ask()
    with Heartbeat(study, trial, interval=1):
        time.sleep(3.5)  # past the grace period: only the beats keep it alive
        fail_stale_trials(study)
        assert study.trials[0].state == TrialState.RUNNING
    time.sleep(3.5)
    fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL


def test_tell_fail_and_ask_raise_no_experimental_warnings(tmp_path: Path) -> None:
    import warnings

    from search.runtime.optuna_compat import FAIL_REASON_ATTR, ask, fail_trial, tell

    study = _study(tmp_path)
    enable_heartbeat(study._storage, interval=1, grace_period=3, max_retry=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second, third = ask(study), ask(study), ask(study)
        tell(study, first, TrialState.COMPLETE, 0.5, "")
        tell(study, second, TrialState.PRUNED, None, "")
        fail_trial(study, third, "why")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert study.trials[2].user_attrs[FAIL_REASON_ATTR] == "why"


def test_the_retrying_storage_sits_under_optunas_cache(tmp_path: Path) -> None:
    """Optuna's cache calls every storage method on its replaceable `_backend` (a transient
    error there is retried); a finished trial refuses updates with UpdateFinishedTrialError;
    heartbeats live in their own table."""
    from search.runtime.optuna_compat import (
        record_heartbeat,
        storage_of,
        trial_id,
        without_heartbeat,
    )
    from search.runtime.outage import Outage
    from search.runtime.retrying import RetryingStorage, retry_storage
    from tests.search.helpers import REFUSED_URL, database_error

    study = _study(tmp_path)
    outage = Outage("db", seconds=30)
    retry_storage(study, outage)
    retrying = storage_of(study)._backend
    assert isinstance(retrying, RetryingStorage)

    class FailsOnce:
        def __init__(self, inner: object) -> None:
            self.inner, self.error = inner, database_error(REFUSED_URL, connect_timeout=5)

        def __getattr__(self, name: str) -> object:
            attr = getattr(self.inner, name)
            if not callable(attr) or self.error is None:
                return attr

            def once(*args: object, **kwargs: object) -> object:
                error, self.error = self.error, None
                if error is not None:
                    raise error
                return attr(*args, **kwargs)

            return once

    retrying.inner = FailsOnce(retrying.inner)
    beating = study.ask()
    assert outage.retries == 1
    retrying.inner = retrying.inner.inner
    enable_heartbeat(storage_of(study), interval=1, grace_period=2, max_retry=1)
    silent = study.ask()
    record_heartbeat(study, beating)
    assert without_heartbeat(study, [trial_id(beating), trial_id(silent)]) == [trial_id(silent)]
    study.tell(beating, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage_of(study).set_trial_intermediate_value(trial_id(beating), 0, 0.5)
