"""A worker: claims trials of one study until the budget, its own limit or its time is up.

Everything but the study name and storage comes from the study. The worker checks its
local data against the study's fingerprint, decodes the data once, and runs trials with a
heartbeat, so that a worker killed mid-trial leaves a trial that the next worker fails and
retries. SIGINT or SIGTERM fail the running trial with the reason recorded, put its
parameters back in the queue, and exit with 130 or 143.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from data.progress import log
from search.config import StudyConfig
from search.optuna_compat import retry_trial
from search.storage import StudyLock, rdb
from search.study import (
    COUNTS_ATTR,
    FAIL_REASON_ATTR,
    FINGERPRINT_ATTR,
    budget,
    budget_used,
    make_sampler,
    open_study,
)
from search.study_data import StudyData, check_matches, load_train_val, prepare

MAX_CONSECUTIVE_FAILURES = 5


class WorkerInterrupted(BaseException):  # noqa: N818 - an interrupt, like KeyboardInterrupt
    """SIGINT or SIGTERM arrived; raised out of whatever the worker was doing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Signals:
    """Turns SIGINT/SIGTERM into `WorkerInterrupted`, except inside `shielded()` blocks
    (a trial from its claim to its tell, storage writes), where the interrupt waits for the
    next `check()`; `interruptible()` opens a shielded block again (training)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self._defer = 0
        self._open = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        if self._defer == 0 or self._open:
            raise WorkerInterrupted(signum)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Hold signals off until the block ends (then `check()` raises them)."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Deliver signals at once inside the block, even within a shielded one: training
        stops at once, while what follows it (recording and telling the result) is shielded."""
        previous, self._open = self._open, True
        try:
            self.check()
            yield
        finally:
            self._open = previous

    def check(self) -> None:
        """Raise the interrupt that arrived during a shielded block, if any."""
        if self.pending is not None:
            raise WorkerInterrupted(self.pending)


class _Heartbeat:
    """Records a running trial's heartbeat every `interval` seconds from a thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # A missed beat (a busy database) is retried at the next interval.
            with contextlib.suppress(Exception):
                self._storage.record_heartbeat(self._trial_id)
            self._stop.wait(self._interval)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class WorkerReport:
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    exit_code: int = 0
    reason: str = ""
    trials_run: int = 0  # counting those of earlier processes of this worker
    restart: bool = False  # memory grew too much: the caller should restart the process


RESTART_ENV = "TUMOR_SEARCH_WORKER_RESTART"


@dataclass(frozen=True)
class RestartState:
    """What a restarted worker process carries over: its limits count from the first start."""

    started_at: float  # time.time() of the first start
    trials_run: int
    completed: int = 0
    pruned: int = 0
    failed: int = 0

    @classmethod
    def take_from_environment(cls) -> RestartState | None:
        """Read (and remove, so children do not inherit it) the state a restart left."""
        raw = os.environ.pop(RESTART_ENV, None)
        if not raw:
            return None
        started, *counts = raw.split(",")
        return cls(float(started), *(int(n) for n in counts))


def restart_state(report: WorkerReport, started_at: float) -> RestartState:
    return RestartState(
        started_at, report.trials_run, report.completed, report.pruned, report.failed
    )


def restart_process(state: RestartState) -> None:
    """Replace this process by a fresh run of the same command (same PID, same pipes)."""
    import sys

    env = dict(os.environ)
    env[RESTART_ENV] = ",".join(
        str(v)
        for v in (state.started_at, state.trials_run, state.completed, state.pruned, state.failed)
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "search", *sys.argv[1:]], env)


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _device_text() -> str:
    from models.backend import gpu_count

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = gpu_count()
    where = f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "CPU"
    return where + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")


def _progress_line(study: optuna.Study, total: int) -> str:
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    try:
        best = study.best_trial
        best_text = f"best {best.value:.4f} (trial {best.number})"
    except ValueError:
        best_text = "no completed trial yet"
    return f"study {study.study_name}: {done}/{total} trials done, {best_text}"


def claim_trial(study: optuna.Study, lock: StudyLock, config: StudyConfig) -> optuna.Trial | None:
    """Start the next trial if the budget allows: a queued one first, else a new one.

    The sampler is seeded from the config's seed and the trial's number, so that workers
    (and a worker's restarted process) never repeat each other's random draws, and one
    worker with one seed reproduces the same sequence.
    """
    with lock.hold():
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and budget_used(trials) >= budget(study):
            return None
        study.sampler = make_sampler(config, trial_number=len(trials))
        return study.ask()


def _work_left(study: optuna.Study) -> bool:
    trials = study.get_trials(deepcopy=False)
    return any(t.state == TrialState.WAITING for t in trials) or budget_used(trials) < budget(study)


def _retry_later(study: optuna.Study, trial_id: int, config: StudyConfig) -> bool:
    """Queue a failed trial's parameters again (as the heartbeat does for a dead worker)."""
    return retry_trial(study, study._storage.get_trial(trial_id), config.heartbeat.max_retry)


def run_worker(
    study_name: str,
    storage_url: str | None,
    data_dir: str | None = None,
    max_trials: int | None = None,
    timeout: float | None = None,
    prepared: StudyData | None = None,
    restarted: RestartState | None = None,
) -> WorkerReport:
    """Run trials of an existing study; see the module docstring.

    Args:
        study_name: The study.
        storage_url: Its storage.
        data_dir: This machine's copy of the data (default: the config's path).
        max_trials: Run at most this many trials.
        timeout: Start no trial after this many seconds.
        prepared: The data already scanned by the caller (`run`), to skip a second scan.
        restarted: Carried over from this worker's earlier process (see `restart_process`).

    Raises:
        InputError, StorageError, DataError: before any trial starts (bad input).
    """
    start = time.monotonic() - (time.time() - restarted.started_at if restarted else 0.0)
    signals = _Signals()
    signals.install()
    report = WorkerReport()
    if restarted is not None:
        report.trials_run, report.completed = restarted.trials_run, restarted.completed
        report.pruned, report.failed = restarted.pruned, restarted.failed
    try:
        return _run(
            study_name, storage_url, data_dir, max_trials, timeout, start, signals, report, prepared
        )
    except WorkerInterrupted as exc:
        log(f"worker interrupted by {signal.Signals(exc.signum).name}")
        report.exit_code = exc.exit_code
        report.reason = "interrupted"
        return report
    finally:
        signals.restore()


def _run(
    study_name: str,
    storage_url: str | None,
    data_dir: str | None,
    max_trials: int | None,
    timeout: float | None,
    start: float,
    signals: _Signals,
    report: WorkerReport,
    prepared: StudyData | None,
) -> WorkerReport:
    study, config = open_study(study_name, storage_url, heartbeat=True)
    timeout = timeout if timeout is not None else config.timeout  # --timeout wins
    data = prepared if prepared is not None else prepare(config, data_dir)
    check_matches(
        data, study_name, study.user_attrs[FINGERPRINT_ATTR], study.user_attrs.get(COUNTS_ATTR)
    )
    ensure_weights(config)
    from search.objective import Objective  # imports Keras: only once the input is good

    arrays = load_train_val(data, config.data.image_size)
    total = budget(study)
    log(
        f"worker {os.getpid()} on study {study_name!r} ({_device_text()}): {len(arrays.y_train)} train / "
        f"{len(arrays.y_val)} val images at {config.data.image_size}px "
        f"({'from cache' if arrays.from_cache else 'decoded'} in {arrays.seconds:.1f}s)"
    )
    objective = Objective(config, arrays, interruptible=signals.interruptible)
    lock = StudyLock(study._storage, study_name)
    from models.backend import keras_module

    keras = keras_module()
    # What the worker holds for its whole life (modules, storage, arrays) moves out of the
    # collector's sight: garbage collections during training stop re-scanning it, and the
    # process exits about a second sooner (no final collection over TensorFlow's objects).
    # Each trial's objects are created later, so clear_session still frees them.
    gc.collect()
    gc.freeze()
    consecutive_failures = 0
    first_rss: float | None = None
    previous_rss: float | None = None
    while True:
        if max_trials is not None and report.trials_run >= max_trials:
            break
        if timeout is not None and time.monotonic() - start >= timeout:
            log(f"worker timeout of {timeout:g}s reached")
            break
        # From its claim to its tell a trial is shielded from signals, training excepted:
        # a finished result is always told before the worker exits.
        with signals.shielded():
            with _quiet_experimental():
                optuna.storages.fail_stale_trials(study)
                trial = claim_trial(study, lock, config)
            if trial is not None and signals.pending is not None:
                reason = f"interrupted by {signal.Signals(signals.pending).name} before it started"
                _fail(study, trial, reason)
                _retry_later(study, trial._trial_id, config)
            elif trial is not None:
                report.trials_run += 1
                state, value, reason = _run_trial(study, trial, objective, config)
                keras.backend.clear_session()  # and collects garbage: the next model starts clean
                rss = _current_rss_mb()
                study._storage.set_trial_user_attr(trial._trial_id, "rss_mb", round(rss, 1))
                _tell(study, trial, state, value, reason)
        signals.check()
        if trial is None:
            break
        first_rss = rss if first_rss is None else first_rss
        if state == TrialState.COMPLETE:
            report.completed += 1
            consecutive_failures = 0
        elif state == TrialState.PRUNED:
            report.pruned += 1
            consecutive_failures = 0
        else:
            report.failed += 1
            consecutive_failures += 1
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                report.exit_code = 1
                report.reason = f"{consecutive_failures} trials in a row failed; last: {reason}"
                log(f"stopping: {report.reason}")
                break
        log(_progress_line(study, total))
        limit = config.worker.max_memory_growth
        growth = max(rss - previous_rss, 0.0) if previous_rss is not None else 0.0
        previous_rss = rss
        more = (max_trials is None or report.trials_run < max_trials) and _work_left(study)
        # Restart before the next trial would take memory past the limit.
        if more and limit > 0 and rss + growth > first_rss * (1 + limit):
            log(
                f"worker memory grew from {first_rss:.0f} MB to {rss:.0f} MB (Keras keeps memory "
                "across models): restarting the worker process to release it"
            )
            report.restart = True
            break
    return report


def ensure_weights(config: StudyConfig) -> None:
    """Fail before the first trial if the weights cannot be had (offline ImageNet, a missing
    file), instead of failing every trial."""
    policy = config.weights_policy()
    if policy.kind != "imagenet":
        return
    from models.registry import get_backbone
    from models.weights import keras_models_dir

    missing = [
        name
        for name in config.space.backbones
        if not (
            keras_models_dir()
            / (get_backbone(name).imagenet_filename(config.data.image_size) or "")
        ).is_file()
    ]
    if not missing:
        return
    from models.backend import keras_module
    from models.builder import build_backbone

    keras = keras_module()
    for name in missing:
        build_backbone(get_backbone(name), config.data.image_size, policy)  # downloads them
        keras.backend.clear_session()
        log(f"fetched ImageNet weights for {name}")


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Any,
    config: StudyConfig,
) -> tuple[TrialState, float | None, str]:
    hb = config.heartbeat
    with _Heartbeat(study._storage, trial._trial_id, hb.interval):
        try:
            value = objective(trial)
            return TrialState.COMPLETE, value, ""
        except optuna.TrialPruned:
            return TrialState.PRUNED, None, ""
        except WorkerInterrupted as exc:
            reason = f"interrupted by {signal.Signals(exc.signum).name}"
            # The interrupt may have cut a storage call short: start from a clean session.
            rdb(study._storage).remove_session()
            _fail(study, trial, reason)
            again = _retry_later(study, trial._trial_id, config)
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


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, reason)
    with _quiet_experimental():
        study.tell(trial, state=TrialState.FAIL)


def _tell(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None, reason: str
) -> None:
    if state == TrialState.FAIL:
        _fail(study, trial, reason)
        return
    with _quiet_experimental():
        if state == TrialState.PRUNED:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)


@contextmanager
def _quiet_experimental() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # We run the heartbeat ourselves around ask/tell, as Study.optimize does.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield

