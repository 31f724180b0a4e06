"""Everything the service relies on in Optuna beyond its plain study API, in one place.

That is: the storage under a study (`study._storage`) and under Optuna's caching wrapper
(`_backend`), a trial's storage id (`trial._trial_id`), RDBStorage's heartbeat attributes,
the heartbeat thread, failing stale trials, telling results without experimental warnings,
and the retry of failed trials (for the heartbeat and interrupts). The behaviour relied on
is pinned by `tests/search/test_optuna_compat.py`.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.progress import log
from search.errors import one_line

RETRY_OF_ATTR = "retry_of"  # user attribute: the number of the failed attempt a retry replaces
TOKEN_ATTR = "queued_token"  # system attribute: tells a retried queueing from a second one
FAIL_REASON_ATTR = "fail_reason"
HEARTBEAT_MISSED_ATTR = "heartbeats_missed"  # user attribute: beats the storage refused


def storage_of(study: optuna.Study) -> Any:
    """The storage a study was loaded with (Optuna's caching wrapper, or a proxy client)."""
    return study._storage


def outage_of(study: optuna.Study) -> Any:
    """The retry policy (`search.runtime.outage.Outage`) of a study opened by a worker, whose
    storage calls `search.runtime.retrying.RetryingStorage` retries; None otherwise."""
    return outage_of_storage(storage_of(study))


def outage_of_storage(storage: Any) -> Any:
    """`outage_of` for a study's storage (Optuna's caching wrapper, or a proxy client's):
    the `outage` of the retrying storage round it or under its caching wrapper."""
    for candidate in (storage, backend_of(storage)):
        outage = getattr(candidate, "outage", None)
        if outage is not None:
            return outage
    return None


def study_id(study: optuna.Study) -> int:
    """A study's id in its storage."""
    return study._study_id


def wrap_storage(study: optuna.Study, wrap: Any) -> None:
    """Put `wrap(storage)` where the study's calls go: under Optuna's caching wrapper (its
    `_backend`, the RDBStorage) when there is one, else round the study's storage."""
    cached = storage_of(study)
    if hasattr(cached, "_backend"):
        cached._backend = wrap(rdb(cached))
    else:
        study._storage = wrap(cached)


def backend_of(storage: Any) -> Any:
    """The storage under Optuna's caching wrapper; None for any other storage."""
    return getattr(storage, "_backend", None)


def cached_storage(storage: Any) -> Any:
    """Optuna's caching wrapper round an RDBStorage (what `optuna.load_study` builds)."""
    return optuna.storages._CachedStorage(storage)


def grpc_servicer() -> tuple[Any, Any]:
    """(add_StorageServiceServicer_to_server, OptunaStorageProxyService): what
    `optuna.storages.run_grpc_proxy_server` serves with, for a server of our own."""
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    return api_pb2_grpc.add_StorageServiceServicer_to_server, OptunaStorageProxyService


# RDBStorage's creation of a trial, which a retried claim must not repeat (`RetryingStorage`).
CREATE_TRIAL_METHOD = "_create_new_trial"


def rdb(storage: Any) -> Any:
    """The RDBStorage under Optuna's caching wrapper (`study._storage`) and under
    `RetryingStorage`: the heartbeat thread, locks and settings use it directly."""
    backend = getattr(storage, "_backend", storage)
    return getattr(backend, "inner", backend)


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """One heartbeat now (retried): a claim records it before it lets go of the study lock,
    so that every claimed RUNNING trial has a heartbeat and can go stale."""
    storage_of(study).record_heartbeat(trial_id(trial))


def without_heartbeat(study: optuna.Study, trial_ids: list[int]) -> list[int]:
    """Which of `trial_ids` have never recorded a heartbeat."""
    from optuna.storages._rdb.models import TrialHeartbeatModel
    from optuna.storages._rdb.storage import _create_scoped_session

    backend = rdb(storage_of(study))

    def beating() -> set[int]:
        with _create_scoped_session(backend.scoped_session) as session:
            query = session.query(TrialHeartbeatModel.trial_id)
            return {row[0] for row in query.filter(TrialHeartbeatModel.trial_id.in_(trial_ids))}

    outage = outage_of(study)
    found = outage.call(beating) if outage is not None else beating()
    return [t for t in trial_ids if t not in found]


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (not its number in the study)."""
    return trial._trial_id


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning (the heartbeat API is marked experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


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
                TOKEN_ATTR: uuid.uuid4().hex,
            },
        )
    )
    return True


def retry_later(study: optuna.Study, trial: optuna.Trial, max_retry: int | None) -> bool:
    """`retry_trial` for a trial this process has just failed."""
    return retry_trial(study, storage_of(study).get_trial(trial_id(trial)), max_retry)


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
    backend = rdb(storage)
    backend.heartbeat_interval = interval
    backend.grace_period = grace_period
    backend.heartbeat_stale_trial_callback = RetryStaleTrial(max_retry)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped beating, and queue them again."""
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)


def _describe(exc: BaseException) -> str:
    """One line naming an error and what caused it (Optuna wraps a database's own error)."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not exc:
        text += f"; caused by {type(cause).__name__}: {cause}"
    return one_line(text)[:400]


class Heartbeat:
    """Records a running trial's heartbeat every `interval` seconds from a thread."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: int) -> None:
        # The storage itself, not the retrying one: a missed beat is retried at the next one.
        self._storage, self._trial_id, self._interval = (
            rdb(storage_of(study)),
            trial_id(trial),
            interval,
        )
        self._trial, self._number = trial, trial.number
        self.missed = 0
        self._logged: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        # The claim recorded the first beat. A missed beat (a busy or unreachable
        # database) is retried at the next interval; each distinct error is logged once.
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # noqa: BLE001 - the trial goes on; the next beat retries
                self.missed += 1
                text = _describe(exc)
                if text not in self._logged:
                    self._logged.add(text)
                    log(
                        f"[trial {self._number}] heartbeat not recorded ({text}); retried every "
                        f"{self._interval}s, the same error not logged again"
                    )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.missed:  # `status` counts them; a trial already finished keeps none
            with contextlib.suppress(Exception):
                self._trial.set_user_attr(HEARTBEAT_MISSED_ATTR, self.missed)


def reset_session(study: optuna.Study) -> None:
    """Start the storage from a clean session: an interrupt may have cut a call short."""
    with contextlib.suppress(AttributeError):  # a proxy client holds no session
        rdb(storage_of(study)).remove_session()


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Record why a trial failed and tell it failed."""
    trial.set_user_attr(FAIL_REASON_ATTR, reason)
    with quiet_experimental():
        study.tell(trial, state=TrialState.FAIL)


def fail_frozen(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """`fail_trial` for a trial this process holds no `optuna.Trial` of; False when it had
    finished meanwhile."""
    storage = storage_of(study)
    try:
        storage.set_trial_user_attr(trial_id(trial), FAIL_REASON_ATTR, reason)
        return storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    state: TrialState,
    value: float | Sequence[float] | None,
    reason: str,
) -> None:
    """Tell a trial's outcome: its value, that it was pruned, or why it failed."""
    if state == TrialState.FAIL:
        fail_trial(study, trial, reason)
        return
    with quiet_experimental():
        try:
            if state == TrialState.PRUNED:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value)
        except ValueError as exc:  # "Cannot tell a FAIL trial.": another worker failed it
            if "Cannot tell a" in str(exc):
                raise optuna.exceptions.UpdateFinishedTrialError(str(exc)) from exc
            raise


def ask(study: optuna.Study) -> optuna.Trial:
    """A new trial (a queued one first), without the heartbeat's experimental warning."""
    with quiet_experimental():
        return study.ask()
