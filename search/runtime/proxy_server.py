"""The server side of the storage proxy: many workers, one database connection pool.

`tumor-search storage-proxy --storage DATABASE_URL` serves the database to workers started
with ``--storage grpc://HOST:PORT``. Optuna's `GrpcStorageProxy` is a plain storage: it has
no heartbeat and no database engine, so the two things a worker needs beyond storage calls
are done by the proxy, which has both, on two reserved attribute keys:

- a worker's heartbeat is `set_trial_system_attr(trial, HEARTBEAT_KEY)`, which the proxy
  records as the database's own heartbeat (nothing is stored under the key);
- `set_study_system_attr(study, MAINTAIN_KEY)`, sent by every claim, fails and queues again
  the study's orphaned and stale trials, under the study lock, with the study config's
  grace period (what a direct worker's claim does itself); stale ones only when neither the
  asking worker nor the proxy met a storage outage within that grace period.

A new trial is created, and a queued one taken, under the same study lock as direct
workers' claims; a new one past the budget is refused (the worker then stops as when the
budget is met), so workers through the proxy and on the database meet the budget exactly
together. A transient database error reaches the worker marked as such, and the worker
retries it as it retries an unreachable proxy (`search.runtime.outage`).

The proxy has no authentication: whoever reaches its port can read and change every study.
It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna

from common.progress import log
from search.runtime.proxy import BUDGET_USED, HEARTBEAT_KEY, MAINTAIN_KEY


class ProxyBackend:
    """What the proxy serves: the database's storage, with claims (a new trial against the
    budget, a queued one taken) under the study lock, heartbeats recorded, stale trials
    failed on request, and transient database errors marked so that workers retry them."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()  # the dict of locks
        self._stale_guard = threading.Lock()  # heartbeat settings: one storage, many studies
        # Heartbeats are judged only one grace period after the proxy started, or after the
        # database last failed it: meanwhile no worker could beat.
        self._healthy_since = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return functools.partial(self._call, attr) if inspect.isroutine(attr) else attr

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from search.runtime.outage import PROXY_TRANSIENT, describe, is_transient

        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._healthy_since = time.monotonic()
            raise RuntimeError(f"{PROXY_TRANSIENT}: {describe(exc)}") from None

    @contextlib.contextmanager
    def _study_lock(self, study_id: int) -> Iterator[str]:
        """This process's lock for the study (the server answers from a thread pool), then
        the study lock that direct workers take too; yields the study's name."""
        from search.runtime.storage import StudyLock

        with self._guard:
            local = self._locks.setdefault(study_id, threading.Lock())
        name = self._inner.get_study_name_from_id(study_id)
        with local, StudyLock(self._inner, name).hold():
            yield name

    def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
        return self._call(self._create_claimed, study_id, template_trial)

    def _create_claimed(self, study_id: int, template_trial: Any) -> int:
        if template_trial is not None:  # a queued trial (a retry, a seed): not a claim
            return self._inner.create_new_trial(study_id, template_trial)
        from search.runtime.study import BUDGET_ATTR, budget_used

        with self._study_lock(study_id):
            budget = self._inner.get_study_user_attrs(study_id).get(BUDGET_ATTR)
            trials = self._inner.get_all_trials(study_id, deepcopy=False)
            if budget is not None and budget_used(trials) >= int(budget):
                raise KeyError(BUDGET_USED)
            return self._inner.create_new_trial(study_id)

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        """Taking a queued trial (WAITING -> RUNNING) is a claim: under the study lock, as
        direct workers claim (SQLite's transactions alone let two takers both win)."""
        if state != optuna.trial.TrialState.RUNNING:
            return self._call(self._inner.set_trial_state_values, trial_id, state, values)
        return self._call(self._take_queued, trial_id, values)

    def _take_queued(self, trial_id: int, values: Any) -> bool:
        with self._study_lock(self._study_of(trial_id)):
            return self._inner.set_trial_state_values(
                trial_id, optuna.trial.TrialState.RUNNING, values
            )

    def _study_of(self, trial_id: int) -> int:
        from sqlalchemy import text

        from search.runtime.optuna_compat import rdb

        query = text("SELECT study_id FROM trials WHERE trial_id = :trial")
        with rdb(self._inner).engine.connect() as conn:
            study_id = conn.execute(query, {"trial": trial_id}).scalar()
        if study_id is None:
            raise KeyError(f"no trial with id {trial_id}")
        return int(study_id)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            from search.runtime.optuna_compat import rdb

            return self._call(rdb(self._inner).record_heartbeat, trial_id)
        return self._call(self._inner.set_trial_system_attr, trial_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key == MAINTAIN_KEY:
            stale = bool(value.get("stale")) if isinstance(value, dict) else False
            return self._call(self._maintain, study_id, stale)
        return self._call(self._inner.set_study_system_attr, study_id, key, value)

    def _maintain(self, study_id: int, stale: bool) -> None:
        """A claim's housekeeping: orphans (never beat) always; stale trials (stopped
        beating) when the worker asking had no outage lately and neither had the proxy."""
        from search.runtime import optuna_compat as compat
        from search.runtime.claim import fail_orphans
        from search.runtime.study import CONFIG_ATTR, study_config

        with self._study_lock(study_id) as name:
            study = optuna.load_study(study_name=name, storage=self._inner)
            if CONFIG_ATTR not in study.user_attrs:
                return  # not a tumor-search study
            hb = study_config(study).heartbeat
            fail_orphans(study, study.get_trials(deepcopy=False), hb.grace_period, hb.max_retry)
            if not stale or time.monotonic() - self._healthy_since <= hb.grace_period:
                return
            with self._stale_guard:
                compat.enable_heartbeat(self._inner, hb.interval, hb.grace_period, hb.max_retry)
                compat.fail_stale_trials(study)


def serve(storage_url: str, host: str, port: int) -> None:
    """Serve the database at `storage_url` on host:port until SIGINT or SIGTERM.

    Raises:
        StorageError: the database cannot be opened.
        InputError: the port cannot be bound.
    """
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from search.errors import InputError
    from search.runtime.optuna_compat import cached_storage, grpc_servicer
    from search.runtime.storage import open_storage, parse_url

    parsed = parse_url(storage_url)
    masked = parsed.masked
    # A database server's tables are created here when missing (the proxy is often the first
    # to reach a fresh database); an SQLite file must exist, so a typo makes no new file.
    storage = cached_storage(open_storage(storage_url, create=parsed.sqlite_path is None))
    add_servicer, servicer = grpc_servicer()
    # What optuna.storages.run_grpc_proxy_server builds, but serving ProxyBackend, and
    # without SO_REUSEPORT: a second proxy on a port in use is an error, not a silent twin.
    server = grpc.server(ThreadPoolExecutor(max_workers=32), options=[("grpc.so_reuseport", 0)])
    add_servicer(servicer(ProxyBackend(storage)), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        bound, why = 0, str(exc)
    else:
        why = "address in use or not available"
    if not bound:
        raise InputError(f"cannot serve on {host}:{port}: {why}")
    # The handlers first: a SIGTERM right after the line below is a normal stop (exit 0).
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    server.start()
    log(
        f"storage proxy for {masked} on grpc://{host}:{port} (no authentication: keep it on "
        "loopback or a private network); workers: --storage grpc://HOST:PORT; Ctrl-C stops it"
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.stop(grace=2).wait()
        log("storage proxy stopped")
