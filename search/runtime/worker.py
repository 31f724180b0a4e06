"""A worker: claims trials of one study until the budget, its own limit or its time is up.

Everything but the study name and storage comes from the study. The worker checks its
local data against the study's fingerprint, decodes the data once, and runs trials with a
heartbeat, so that a worker killed mid-trial leaves a trial that the next worker fails and
retries. SIGINT or SIGTERM fail the running trial with the reason recorded, put its
parameters back in the queue, and exit with 130 or 143 (a trial whose training had ended
is told first; see `search.runtime.signals`). Storage calls ride out an outage of up to
``storage.retry_seconds`` (`search.runtime.outage`); a longer one ends the worker with 75.
"""

from __future__ import annotations

import gc
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from common.progress import log
from models.backend import release_models, runtime_text
from models.step_reuse import POOL
from search.config import StudyConfig
from search.runtime import optuna_compat as compat
from search.runtime.claim import WORKER_ATTR, WorkerReport, claim_trial, worker_identity
from search.runtime.restart import MemoryWatch, RestartState, current_rss_mb, restart_process
from search.runtime.signals import Signals, WorkerInterrupted
from search.runtime.storage import StudyLock
from search.runtime.study import (
    COUNTS_ATTR,
    FINGERPRINT_ATTR,
    WEIGHTS_ATTR,
    budget,
    budget_used,
    open_study,
)
from search.study_data import StudyData, check_matches, load_train_val, prepare
from search.training.weights import check_same_weights, ensure_weights

# What a finished trial tells: one value, one per objective of a multi-objective study, or none.
Value = float | list[float] | None
# The line a worker logs after each trial (the command line hands in results.status's).
Progress = Callable[[optuna.Study, int], str]


def trials_done(study: optuna.Study, total: int) -> str:
    """The plain progress line: trials finished of the budget."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return f"study {study.study_name}: {len(done)}/{total} trials done"


LOST = "another worker failed it while the storage was unreachable, and queued it again"


def run_here(
    study_name: str,
    storage_url: str,
    data_dir: str | None,
    max_trials: int | None,
    timeout: float | None,
    restarted: RestartState | None,
    started_at: float,
    prepared: StudyData | None = None,
    leave_for_finalize: bool = False,
    progress: Progress = trials_done,
) -> WorkerReport:
    """`run_worker` in this process; when its memory grew too much, this process is replaced
    by a fresh one that goes on (`restart_process`), counting its limits from `started_at`
    (this worker's first start)."""
    report = run_worker(
        study_name, storage_url, data_dir, max_trials, timeout, prepared, restarted,
        leave_for_finalize, progress,
    )  # fmt: skip
    if report.restart:
        first = restarted.started_at if restarted else started_at
        restart_process(
            RestartState(first, report.trials_run, report.completed, report.pruned, report.failed)
        )
    return report


@dataclass
class _Worker:
    """What a worker holds for its whole life."""

    study: optuna.Study
    config: StudyConfig
    objective: Any
    lock: StudyLock
    signals: Signals
    keras: Any
    memory: MemoryWatch
    total: int


def _work_left(study: optuna.Study) -> bool:
    trials = study.get_trials(deepcopy=False)
    return any(t.state == TrialState.WAITING for t in trials) or budget_used(trials) < budget(study)


def run_worker(
    study_name: str,
    storage_url: str | None,
    data_dir: str | None = None,
    max_trials: int | None = None,
    timeout: float | None = None,
    prepared: StudyData | None = None,
    restarted: RestartState | None = None,
    leave_for_finalize: bool = False,
    progress: Progress = trials_done,
) -> WorkerReport:
    """Run trials of an existing study; see the module docstring.

    Args:
        study_name: The study.
        storage_url: Its storage.
        data_dir: This machine's copy of the data (default: the config's path).
        max_trials: Run at most this many trials.
        timeout: Start no trial after this many seconds (default: the config's timeout).
        prepared: The data already scanned by the caller (`run`), to skip a second scan.
        restarted: Carried over from this worker's earlier process (see `restart_process`).
        leave_for_finalize: Stop starting trials once the rest of `timeout` is what `run`'s
            finalize needs (`search.runtime.time_plan`).
        progress: The line logged after each trial.

    Raises:
        InputError, StorageError, DataError: before any trial starts (bad input).
        StorageUnavailable: the storage stayed unreachable past the retry limit.
    """
    start = time.monotonic() - (time.time() - restarted.started_at if restarted else 0.0)
    signals = Signals()
    signals.install()
    report = WorkerReport()
    if restarted is not None:
        report.trials_run, report.completed = restarted.trials_run, restarted.completed
        report.pruned, report.failed = restarted.pruned, restarted.failed
    try:
        worker = _start(study_name, storage_url, data_dir, prepared, signals)
        if timeout is None:
            timeout = worker.config.timeout
        limits = _Limits(max_trials, timeout, start, leave_for_finalize)
        return _loop(worker, report, limits, progress)
    except WorkerInterrupted as exc:
        log(f"worker interrupted by {signal.Signals(exc.signum).name}")
        report.exit_code = exc.exit_code
        report.reason = "interrupted"
        return report
    finally:
        signals.restore()


def _start(
    study_name: str,
    storage_url: str | None,
    data_dir: str | None,
    prepared: StudyData | None,
    signals: Signals,
) -> _Worker:
    """Open the study, check and load the data, build the objective (bad input stops here)."""
    study, config = open_study(study_name, storage_url, worker=True)
    data = prepared if prepared is not None else prepare(config, data_dir)
    check_matches(
        data, study_name, study.user_attrs[FINGERPRINT_ATTR], study.user_attrs.get(COUNTS_ATTR)
    )
    ensure_weights(config)
    check_same_weights(config, study.user_attrs.get(WEIGHTS_ATTR), study_name)
    from search.runtime.objective import Objective  # imports Keras: only once the input is good

    arrays = load_train_val(data, config.data.image_size)
    log(
        f"worker {os.getpid()} on study {study_name!r} ({runtime_text()}): {len(arrays.y_train)} train / "
        f"{len(arrays.y_val)} val images at {config.data.image_size}px "
        f"({'from cache' if arrays.from_cache else 'decoded'} in {arrays.seconds:.1f}s)"
    )
    objective = Objective(config, arrays, interruptible=signals.interruptible)
    lock = StudyLock(compat.storage_of(study), study_name)
    outage = compat.outage_of(study)
    if outage is not None:  # an interrupt ends a wait for the storage at once
        outage.stop_when = lambda: (
            WorkerInterrupted(signals.pending) if signals.pending is not None else None
        )
    from models.backend import keras_module

    keras = keras_module()
    # What the worker holds for its whole life (modules, storage, arrays) moves out of the
    # collector's sight: garbage collections during training stop re-scanning it, and the
    # process exits about a second sooner (no final collection over TensorFlow's objects).
    # Each trial's objects are created later, so clear_session still frees them.
    gc.collect()
    gc.freeze()
    memory = MemoryWatch(config.worker.max_memory_growth)
    return _Worker(study, config, objective, lock, signals, keras, memory, budget(study))


@dataclass(frozen=True)
class _Limits:
    """When a worker stops starting trials (besides the study's budget)."""

    max_trials: int | None
    timeout: float | None
    start: float  # time.monotonic() of the worker's first start
    leave_for_finalize: bool

    def reached(self, study: optuna.Study, config: StudyConfig, trials_run: int) -> bool:
        if self.max_trials is not None and trials_run >= self.max_trials:
            return True
        if self.timeout is None:
            return False
        elapsed = time.monotonic() - self.start
        if elapsed >= self.timeout:
            log(f"worker timeout of {self.timeout:g}s reached")
            return True
        if self.leave_for_finalize and len(study.directions) == 1:
            from search.runtime.time_plan import completed_durations, stop_search

            ranked = completed_durations(study)
            if stop_search(elapsed, self.timeout, ranked, config.data.val_fraction):
                log(
                    f"search stopped after {elapsed:.0f}s of {self.timeout:g}s: the rest is "
                    f"for finalize ({len(ranked)} completed trials to choose from)"
                )
                return True
        return False


def _loop(
    worker: _Worker, report: WorkerReport, limits: _Limits, progress: Progress
) -> WorkerReport:
    """Claim, train, tell, until the budget or the worker's limits."""
    max_trials = limits.max_trials
    while True:
        if limits.reached(worker.study, worker.config, report.trials_run):
            break
        # From its claim to its tell a trial is shielded from signals, training excepted:
        # a finished result is always told before the worker exits.
        with worker.signals.shielded():
            trial = _claim(worker)
            if trial is not None:
                report.trials_run += 1
                state, value, reason = _train(worker, trial)
                state = _tell(worker, trial, state, value, reason)
        worker.signals.check()
        if trial is None or report.count(state, reason):
            break
        log(progress(worker.study, worker.total))
        more = (max_trials is None or report.trials_run < max_trials) and _work_left(worker.study)
        if more and _memory_over_limit(worker):  # restart before the next trial passes it
            log(
                f"worker memory grew from {worker.memory.first:.0f} MB to "
                f"{worker.memory.last:.0f} MB (Keras keeps memory across models): restarting "
                "the worker process to release it"
            )
            report.restart = True
            break
    return report


def _memory_over_limit(worker: _Worker) -> bool:
    """Whether the next trial would take the worker past its memory limit, once models kept
    for their traced steps (`models.step_reuse`) are let go, the largest first, if need be.

    Kept models that the last trial's pool dropped are freed here first, after its result
    was told (`_tell`) rather than inside it: a collection over all the process holds,
    0.4-1.2 s."""
    if POOL.let_go:
        release_models()
        worker.memory.settle(current_rss_mb())
    before, dropped = worker.memory.last, 0
    while worker.memory.over_limit() and POOL.let_go_largest():
        release_models()
        worker.memory.record(current_rss_mb())
        dropped += 1
    if dropped:
        log(
            f"worker memory at {before:.0f} MB: let go of {dropped} model(s) kept for their "
            f"traced steps, now {worker.memory.last:.0f} MB"
        )
    return worker.memory.over_limit()


def _claim(worker: _Worker) -> optuna.Trial | None:
    """The next trial, with stale trials failed first; None when there is none to run, or
    when a signal came meanwhile (the trial is then failed and queued again)."""
    outage = compat.outage_of(worker.study)
    if outage is None or outage.quiet_for() > worker.config.heartbeat.grace_period:
        # Right after an outage every trial's heartbeat is old: wait one grace period for
        # the other workers to beat again before calling their trials stale.
        compat.fail_stale_trials(worker.study)
    trial = claim_trial(worker.study, worker.lock, worker.config)
    if trial is not None:
        trial.set_user_attr(WORKER_ATTR, worker_identity())
    if trial is not None and worker.signals.pending is not None:
        reason = f"interrupted by {signal.Signals(worker.signals.pending).name} before it started"
        compat.fail_trial(worker.study, trial, reason)
        compat.retry_later(worker.study, trial, worker.config.heartbeat.max_retry)
        return None
    return trial


def _train(worker: _Worker, trial: optuna.Trial) -> tuple[TrialState, Value, str]:
    """Run the objective with a heartbeat; its outcome (an interrupt fails and requeues the
    trial, then goes on up). RUNNING: another worker failed the trial meanwhile."""
    with compat.Heartbeat(worker.study, trial, worker.config.heartbeat.interval):
        try:
            return TrialState.COMPLETE, worker.objective(trial), ""
        except optuna.TrialPruned:
            return TrialState.PRUNED, None, ""
        except optuna.exceptions.UpdateFinishedTrialError:
            return TrialState.RUNNING, None, LOST
        except WorkerInterrupted as exc:
            reason = f"interrupted by {signal.Signals(exc.signum).name}"
            compat.reset_session(worker.study)  # the interrupt may have cut a call short
            try:
                compat.fail_trial(worker.study, trial, reason)
            except optuna.exceptions.UpdateFinishedTrialError:
                raise exc from None  # another worker failed and requeued it meanwhile
            again = compat.retry_later(worker.study, trial, worker.config.heartbeat.max_retry)
            log(
                f"[trial {trial.number}] failed: {reason}; "
                + ("its parameters are queued again" if again else "retried too often already")
            )
            raise
        except Exception as exc:  # noqa: BLE001 - a failed trial must not stop the worker
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            log(f"[trial {trial.number}] failed: {reason}")
            if os.environ.get("TUMOR_SEARCH_DEBUG"):
                traceback.print_exc()
            return TrialState.FAIL, None, reason


def _tell(
    worker: _Worker, trial: optuna.Trial, state: TrialState, value: Value, reason: str
) -> TrialState:
    """Tell the trial's outcome; RUNNING when it is no longer this worker's to tell."""
    # The next model starts clean, the last one's graphs freed (kept models the pool dropped
    # after the tell: `_memory_over_limit`).
    release_models(free_dropped=False)
    rss = current_rss_mb()
    try:
        if state == TrialState.RUNNING:
            raise optuna.exceptions.UpdateFinishedTrialError
        trial.set_user_attr("rss_mb", round(rss, 1))
        compat.tell(worker.study, trial, state, value, reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        # While the storage was unreachable the heartbeat went stale, and another worker
        # failed the trial and queued it again: it is not this worker's to tell any more.
        log(f"[trial {trial.number}] given up: {LOST}")
        return TrialState.RUNNING
    worker.memory.record(rss)
    return state
