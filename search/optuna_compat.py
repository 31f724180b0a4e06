"""What the service relies on in Optuna beyond its plain study API: the retry of failed
trials, shared by the heartbeat (a killed worker) and by interrupts (Ctrl-C, SIGTERM)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

RETRY_OF_ATTR = "retry_of"  # user attribute: the number of the failed attempt a retry replaces


def retry_trial(study: optuna.Study, failed: FrozenTrial, max_retry: int | None) -> bool:
    """Queue a failed trial's parameters again as a fresh WAITING trial.

    Unlike Optuna's `RetryHeartbeatStaleTrialCallback`, the retry inherits only the
    parameters and a link to the failed attempt, not its user attributes (its fail reason,
    history, timings) or other system attributes. The system attributes `failed_trial` and
    `retry_history` are Optuna's own, so its `retried_trial_number` and `retry_history`
    read them as usual.

    Args:
        study: The study.
        failed: The failed trial.
        max_retry: Retries of one original trial at most (None: no limit); every retry of
            that trial, for whatever reason, counts.

    Returns:
        Whether the trial was queued again.
    """
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if max_retry is not None and len(history) > max_retry:
        return False
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs={RETRY_OF_ATTR: failed.number},
            system_attrs={
                "failed_trial": failed.system_attrs.get("failed_trial", failed.number),
                "retry_history": history,
            },
        )
    )
    return True


class RetryStaleTrial:
    """The heartbeat's callback for a stale trial (its worker died): `retry_trial`."""

    def __init__(self, max_retry: int | None) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        retry_trial(study, trial, self.max_retry)


def enable_heartbeat(storage: Any, interval: int, grace_period: int, max_retry: int | None) -> None:
    """Give an open RDBStorage the heartbeat a worker needs (what its constructor's
    ``heartbeat_interval``, ``grace_period`` and ``heartbeat_stale_trial_callback`` set), so
    that the study config read from the storage can decide them without a second connection.
    """
    from search.storage import rdb

    backend = rdb(storage)
    backend.heartbeat_interval = interval
    backend.grace_period = grace_period
    backend.heartbeat_stale_trial_callback = RetryStaleTrial(max_retry)
