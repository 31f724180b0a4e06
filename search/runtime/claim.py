"""Claiming a worker's next trial, and counting what its trials came to.

A claim holds the study lock while it counts the trials and starts one, so that workers
meet the budget exactly (through the storage proxy, the proxy takes that lock), and records
the trial's first heartbeat before it lets go: every claimed RUNNING trial can then go
stale. A claim whose storage calls were retried may have started a trial twice (a commit
that landed although its answer was lost); such a trial never gets a heartbeat, and a later
claim fails it and queues it again once it is older than the heartbeat's grace period.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.progress import log
from search.config import StudyConfig
from search.runtime import optuna_compat as compat
from search.runtime.proxy import budget_refused, is_proxy
from search.runtime.storage import StudyLock
from search.runtime.study import ORPHAN_REASON, budget, budget_used, make_sampler

MAX_CONSECUTIVE_FAILURES = 5
WORKER_ATTR = "worker"  # trial user attribute: the host and process that ran it


@dataclass
class WorkerReport:
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    lost: int = 0  # trials another worker failed while the storage was unreachable
    exit_code: int = 0
    reason: str = ""
    trials_run: int = 0  # counting those of earlier processes of this worker
    restart: bool = False  # memory grew too much: the caller should restart the process
    consecutive_failures: int = 0

    def count(self, state: TrialState, reason: str) -> bool:
        """Count a told trial; True when too many trials in a row have failed."""
        if state == TrialState.RUNNING:  # given up: another worker failed it meanwhile
            self.lost += 1
            return False
        if state == TrialState.FAIL:
            self.failed += 1
            self.consecutive_failures += 1
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                self.exit_code = 1
                self.reason = f"{self.consecutive_failures} trials in a row failed; last: {reason}"
                log(f"stopping: {self.reason}")
                return True
            return False
        if state == TrialState.COMPLETE:
            self.completed += 1
        else:
            self.pruned += 1
        self.consecutive_failures = 0
        return False


def claim_trial(study: optuna.Study, lock: StudyLock, config: StudyConfig) -> optuna.Trial | None:
    """Start the next trial if the budget allows: a queued one first, else a new one.

    The sampler is seeded from the config's seed and the trial's number, so that workers
    (and a worker's restarted process) never repeat each other's random draws, and one
    worker with one seed reproduces the same sequence.
    """
    storage = compat.storage_of(study)
    with lock.hold():
        trials = study.get_trials(deepcopy=False)
        if is_proxy(compat.rdb(storage)):  # the proxy does it, under the lock (proxy.py)
            outage = compat.outage_of(study)
            stale = outage is None or outage.quiet_for() > config.heartbeat.grace_period
            storage.maintain(compat.study_id(study), stale)
        else:
            fail_orphans(study, trials, config.heartbeat.grace_period, config.heartbeat.max_retry)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and budget_used(trials) >= budget(study):
            return None
        # The number of the trial ask() returns: the oldest queued one's (whose params left
        # out are sampled), else the next. len(trials) counts a queued trial before it
        # starts, so the first new trial after it drew the same "random" values.
        queued = [t.number for t in trials if t.state == TrialState.WAITING]
        study.sampler = make_sampler(config, trial_number=min(queued, default=len(trials)))
        try:
            trial = compat.ask(study)
        except KeyError as exc:
            if budget_refused(exc):  # another worker of the proxy took the last trial
                return None
            raise
        compat.record_heartbeat(study, trial)
        return trial


def worker_identity() -> dict[str, Any]:
    """Where a trial runs: host, process, and the Slurm task or Kubernetes pod if any."""
    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and task:
        out["slurm_task"] = f"{job}_{task}"
    if os.environ.get("JOB_COMPLETION_INDEX"):
        out["pod_index"] = int(os.environ["JOB_COMPLETION_INDEX"])
    return out


def fail_orphans(
    study: optuna.Study, trials: list[FrozenTrial], grace_period: int, max_retry: int | None
) -> None:
    """Fail the RUNNING trials that never recorded a heartbeat although they started more
    than a grace period ago. Every claim records its trial's first heartbeat before it lets
    go of the study lock, so such a trial is a retried claim's double (or its worker died
    within its claim): no worker runs it, and Optuna's stale check, which looks at
    heartbeats alone, would leave it RUNNING for ever.

    An orphan of a queued trial (a seed configuration, a retry) is queued again, since its
    parameters were chosen; an orphan of a new trial is not (the sampler draws again), and
    it does not count against the budget (`budget_used`): the budget stays exact when a
    claim was retried after its first commit landed."""
    cutoff = dt.datetime.now() - dt.timedelta(seconds=grace_period)
    old = {
        compat.trial_id(t): t
        for t in trials
        if t.state == TrialState.RUNNING and t.datetime_start and t.datetime_start < cutoff
    }
    if not old:
        return
    for orphan_id in compat.without_heartbeat(study, list(old)):
        orphan = old[orphan_id]
        queued = "fixed_params" in orphan.system_attrs or compat.TOKEN_ATTR in orphan.system_attrs
        if not compat.fail_frozen(study, orphan, ORPHAN_REASON):
            continue
        if queued and compat.retry_trial(study, orphan, max_retry):
            log(f"[trial {orphan.number}] failed: {ORPHAN_REASON}; queued again")
        else:
            log(f"[trial {orphan.number}] failed: {ORPHAN_REASON}; not counted in the budget")
