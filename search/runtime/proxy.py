"""Many workers, one database connection pool: Optuna's gRPC storage proxy, made whole.

`tumor-search storage-proxy --storage DATABASE_URL` serves the database to workers started
with ``--storage grpc://HOST:PORT``. Optuna's `GrpcStorageProxy` is a plain storage: it has
no heartbeat and no database engine, so the two things a worker needs beyond storage calls
are done by the proxy, which has both, on two reserved attribute keys:

- a worker's heartbeat is `set_trial_system_attr(trial, HEARTBEAT_KEY)`, which the proxy
  records as the database's own heartbeat (nothing is stored under the key);
- `set_study_system_attr(study, MAINTAIN_KEY)`, sent by every claim, fails and queues again
  the study's stale and orphaned trials, under the study lock, with the study config's
  grace period (what a direct worker's claim does itself).

A new trial is created under the same study lock as direct workers' claims, and refused
once the budget is used (the worker then stops as when the budget is met), so workers
through the proxy and workers on the database meet the budget exactly together.

The proxy has no authentication: whoever reaches its port can read and change every study.
It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy

from common.progress import log

HEARTBEAT_KEY = "tumor_search:heartbeat"
MAINTAIN_KEY = "tumor_search:maintain"
BUDGET_USED = "tumor-search: the study's trial budget is used"
DEFAULT_PORT = 13000
READY_TIMEOUT_S = 10.0


def split_url(url: str) -> tuple[str, int] | None:
    """``("host", port)`` of a ``grpc://HOST[:PORT]`` URL; None for any other URL.

    Raises:
        ValueError: a grpc URL without a host, or with a port that is not a number.
    """
    if not url.startswith("grpc://"):
        return None
    rest = url[len("grpc://") :].rstrip("/")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", str(DEFAULT_PORT))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"malformed storage proxy URL {url!r}: expected grpc://HOST:PORT")
    return host, int(port)


class ProxyClient(GrpcStorageProxy):
    """A worker's storage through the proxy: Optuna's client plus the heartbeat and the
    maintenance call that the proxy carries out."""

    def __init__(self, url: str, host: str, port: int) -> None:
        from search.runtime.optuna_compat import quiet_experimental

        with quiet_experimental():
            super().__init__(host=host, port=port)
        self.url = url

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, None)

    def maintain(self, study_id: int) -> None:
        self.set_study_system_attr(study_id, MAINTAIN_KEY, None)


def is_proxy(storage: Any) -> bool:
    return isinstance(storage, ProxyClient)


def connect(url: str, host: str, port: int, wait: float | None) -> ProxyClient:
    """A client of the proxy at host:port, once it answers.

    Args:
        wait: A worker's storage retry limit: wait this long for a proxy that is not up
            (yet), then raise `StorageUnavailable`. None: READY_TIMEOUT_S, then StorageError.
    """
    from search.errors import StorageError
    from search.runtime.outage import StorageUnavailable

    client = ProxyClient(url, host, port)
    timeout = READY_TIMEOUT_S if wait is None else wait
    try:
        try:
            client.wait_server_ready(timeout=min(1.0, timeout))
        except ConnectionError:
            if timeout <= 1.0:
                raise
            log(f"storage proxy {url} does not answer yet; waiting up to {timeout:g}s")
            client.wait_server_ready(timeout=timeout - 1.0)
    except ConnectionError:
        client.close()
        if wait is not None:
            raise StorageUnavailable(url, timeout, "no storage proxy answers") from None
        raise StorageError(
            f"no storage proxy answers at {url} (waited {timeout:g}s); start one with "
            "`tumor-search storage-proxy --storage DATABASE_URL`"
        ) from None
    return client


def budget_refused(exc: BaseException) -> bool:
    """True for the proxy's refusal of a new trial once the budget is used."""
    cause = exc.__cause__
    details = getattr(cause, "details", None)
    return isinstance(exc, KeyError) and callable(details) and BUDGET_USED in (details() or "")


class ProxyBackend:
    """What the proxy serves: the database's storage, with new trials counted against the
    budget under the study lock, heartbeats recorded, and stale trials failed on request."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

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
        if template_trial is not None:  # a queued trial (a retry, a seed): not a claim
            return self._inner.create_new_trial(study_id, template_trial)
        from search.runtime.study import BUDGET_ATTR, budget_used

        with self._study_lock(study_id):
            budget = self._inner.get_study_user_attrs(study_id).get(BUDGET_ATTR)
            trials = self._inner.get_all_trials(study_id, deepcopy=False)
            if budget is not None and budget_used(trials) >= int(budget):
                raise KeyError(BUDGET_USED)
            return self._inner.create_new_trial(study_id)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            from search.runtime.optuna_compat import rdb

            rdb(self._inner).record_heartbeat(trial_id)
            return
        self._inner.set_trial_system_attr(trial_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key == MAINTAIN_KEY:
            self._maintain(study_id)
            return
        self._inner.set_study_system_attr(study_id, key, value)

    def _maintain(self, study_id: int) -> None:
        from search.runtime import optuna_compat as compat
        from search.runtime.claim import fail_orphans
        from search.runtime.study import CONFIG_ATTR, study_config

        with self._study_lock(study_id) as name:
            study = optuna.load_study(study_name=name, storage=self._inner)
            if CONFIG_ATTR not in study.user_attrs:
                return  # not a tumor-search study
            hb = study_config(study).heartbeat
            with self._guard:  # the heartbeat settings live on the one shared storage
                compat.enable_heartbeat(self._inner, hb.interval, hb.grace_period, hb.max_retry)
                fail_orphans(study, study.get_trials(deepcopy=False), hb.grace_period, hb.max_retry)
                compat.fail_stale_trials(study)


def serve(storage_url: str, host: str, port: int) -> None:
    """Serve the database at `storage_url` on host:port until SIGINT or SIGTERM.

    Raises:
        StorageError: the database cannot be opened.
        InputError: the port cannot be bound.
    """
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    from search.errors import InputError
    from search.runtime.storage import open_storage, parse_url

    masked = parse_url(storage_url).masked
    storage = optuna.storages._CachedStorage(open_storage(storage_url))
    # What optuna.storages.run_grpc_proxy_server builds, but serving ProxyBackend, and
    # without SO_REUSEPORT: a second proxy on a port in use is an error, not a silent twin.
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    api_pb2_grpc.add_StorageServiceServicer_to_server(
        OptunaStorageProxyService(ProxyBackend(storage)), server
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        bound, why = 0, str(exc)
    else:
        why = "address in use or not available"
    if not bound:
        raise InputError(f"cannot serve on {host}:{port}: {why}")
    server.start()
    log(
        f"storage proxy for {masked} on grpc://{host}:{port} (no authentication: keep it on "
        "loopback or a private network); workers: --storage grpc://HOST:PORT; Ctrl-C stops it"
    )
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.stop(grace=2).wait()
        log("storage proxy stopped")
