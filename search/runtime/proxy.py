"""The client side of the storage proxy: a worker's `--storage grpc://HOST:PORT`.

`tumor-search storage-proxy --storage DATABASE_URL` (`search.runtime.proxy_server`) serves the
database to workers started with ``--storage grpc://HOST:PORT``. Optuna's `GrpcStorageProxy`
is a plain storage: it has no heartbeat and no database engine, so the two things a worker
needs beyond storage calls travel on two reserved attribute keys, which the proxy carries
out (see `search.runtime.proxy_server`):

- a worker's heartbeat is `set_trial_system_attr(trial, HEARTBEAT_KEY)`;
- `set_study_system_attr(study, MAINTAIN_KEY)`, sent by every claim, fails and queues again
  the study's orphaned and stale trials.

A new trial past the budget is refused by the proxy (`budget_refused` tells that refusal
from an error).
"""

from __future__ import annotations

from typing import Any

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

    def maintain(self, study_id: int, stale: bool) -> None:
        """Have the proxy fail orphaned trials, and stale ones if `stale` (this worker had
        no storage outage for a grace period: other workers had time to beat again)."""
        self.set_study_system_attr(study_id, MAINTAIN_KEY, {"stale": stale})


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
            client.wait_server_ready(timeout=1.0)
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
