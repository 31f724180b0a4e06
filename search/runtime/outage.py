"""Riding out a storage outage: which errors are transient, and how long to retry them.

A database restart, a failover or a database that is still starting up shows as connection
errors for a while. `Outage` retries a call that meets one with exponential backoff for up
to ``storage.retry_seconds`` (counted from the first failure of the outage, across calls),
logging one line when the storage becomes unreachable and one when it is back; past the
limit it raises `StorageUnavailable` (exit 75, EX_TEMPFAIL). Errors that waiting cannot
mend (a wrong password, an unknown host, a missing database) are never retried.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from common.progress import log
from search.errors import mask_password

EX_TEMPFAIL = 75
DEFAULT_RETRY_SECONDS = 120.0
RETRY_ENV = "TUMOR_SEARCH_STORAGE_RETRY"
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 8.0

T = TypeVar("T")

_PERMANENT = re.compile(
    r"password authentication failed|authentication failed|no password supplied|"
    r'role ".*" does not exist|database ".*" does not exist|could not translate host name|'
    r"name or service not known|nodename nor servname|"
    r"unknown host|access denied|unable to open database file|no such table",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"connection refused|could not connect|server closed the connection|terminating connection|"
    r"database system is (starting up|shutting down|in recovery|not yet accepting)|"
    r"too many clients|remaining connection slots|timeout expired|timed out|"
    r"connection already closed|no connection to the server|ssl syscall error|eof detected|"
    r"could not receive data|could not send data|connection reset|broken pipe|"
    r"database is locked|cannot connect now|lost connection|server has gone away|"
    r"can't reconnect until invalid transaction|temporary failure in name resolution",
    re.IGNORECASE,
)


PROXY_TRANSIENT = "tumor-search: transient storage error"  # the storage proxy's mark


class StorageUnavailable(BaseException):  # noqa: N818 - like an interrupt, it ends the worker
    """The storage stayed unreachable for longer than the retry limit.

    A BaseException, as an interrupt is: a trial's ``except Exception`` must not take it for
    the trial's own failure and go on writing to a storage that is not there.
    """

    exit_code = EX_TEMPFAIL

    def __init__(self, masked_url: str, seconds: float, cause: str) -> None:
        super().__init__(
            f"storage {masked_url} unreachable for {seconds:.1f}s ({cause}); giving up"
        )


class LockNotGranted(StorageUnavailable):
    """The database would not grant a lock (MySQL's GET_LOCK returned 0 or NULL): the
    worker ends as when the storage stays unreachable, rather than go on without it."""

    def __init__(self, message: str) -> None:
        BaseException.__init__(self, message)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, what it wraps (``orig`` of SQLAlchemy errors) and what raised it
    (``__cause__``; not ``__context__``, an unrelated error being handled meanwhile)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [getattr(item, "orig", None), item.__cause__]


def _messages(exc: BaseException) -> list[str]:
    """The drivers' own messages along the chain: a SQLAlchemy error's text also holds the
    statement and its parameters (trial attributes), which must not decide anything."""
    return [str(item).strip() for item in _chain(exc) if getattr(item, "orig", None) is None]


def describe(exc: BaseException) -> str:
    """The first line of the innermost message (password masked), for a progress line."""
    for text in reversed(_messages(exc)):
        if text:
            return mask_password(text.splitlines()[0][:200])
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Whether waiting may mend `exc`: a refused or dropped connection, a timeout, a
    database starting up or shutting down (57P03), too many clients (53300), a locked SQLite
    file. Authentication failures, unknown hosts and missing databases are not."""
    from sqlalchemy import exc as sa

    chain = list(_chain(exc))
    proxied = _grpc_transient(chain)
    if proxied is not None:
        return proxied
    text = " ".join(_messages(exc))
    if _PERMANENT.search(text):
        return False
    if any(getattr(item, "connection_invalidated", False) for item in chain):
        return True
    kinds = (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError)
    operational = any(
        isinstance(item, kinds) or type(item).__name__ in ("OperationalError", "InterfaceError")
        for item in chain
    )
    pending = any(isinstance(item, sa.PendingRollbackError) for item in chain)
    return (operational or pending) and bool(_TRANSIENT.search(text))


def _grpc_transient(chain: list[BaseException]) -> bool | None:
    """For an error from the storage proxy (a gRPC call): whether it is transient; None
    when `chain` holds no gRPC error. The proxy not answering is; so is a database error
    behind it that the proxy marked transient (`PROXY_TRANSIENT`)."""
    for item in chain:
        code, details = getattr(item, "code", None), getattr(item, "details", None)
        if not (type(item).__module__.startswith("grpc") and callable(code) and callable(details)):
            continue
        name = getattr(code(), "name", "")
        return name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") or (
            name == "UNKNOWN" and PROXY_TRANSIENT in (details() or "")
        )
    return None


def retry_override() -> float | None:
    """``--storage-retry`` (passed on to child and restarted processes in the environment)."""
    value = os.environ.get(RETRY_ENV)
    return float(value) if value else None


class Outage:
    """Retries transient storage errors for up to `seconds`; see the module docstring.

    One instance per process and storage: the limit counts from the outage's first failure
    whichever call met it, so that a trial's many storage calls never wait longer in all.

    Used by one thread (a worker's main thread; its heartbeat thread calls the storage
    directly and simply beats again at its next interval).

    Args:
        masked_url: The storage, password masked, for the progress lines.
        seconds: The retry limit (0: no retry).
        between: Called before each retry (Optuna's session is reset there).
    """

    def __init__(
        self, masked_url: str, seconds: float, between: Callable[[], None] | None = None
    ) -> None:
        self.masked_url, self.seconds, self.between = masked_url, seconds, between
        self.since: float | None = None
        self.back_at: float | None = None
        self.retries = 0
        self.gave_up: str | None = None
        # What ends the wait at once (a worker's pending interrupt), raised as it is.
        self.stop_when: Callable[[], BaseException | None] = lambda: None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        delay = FIRST_DELAY_S
        while True:
            if self.gave_up is not None:  # once given up, every call fails at once
                raise StorageUnavailable(self.masked_url, self.seconds, self.gave_up)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                wait = self._failed(exc, delay)
                stop = self.stop_when()
                if stop is not None:
                    raise stop from None
                time.sleep(wait)
                delay = min(delay * 2, MAX_DELAY_S)
                if self.between is not None:
                    self.between()
                continue
            self._back()
            return result

    def quiet_for(self) -> float:
        """Seconds since the last outage ended (infinite when there was none)."""
        return math.inf if self.back_at is None else time.monotonic() - self.back_at

    def _failed(self, exc: Exception, delay: float) -> float:
        """Note a failure; how long to wait before the next try (raises past the limit)."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log(
                f"storage {self.masked_url} unreachable ({describe(exc)}); "
                f"retrying for up to {self.seconds:g}s"
            )
        left = self.seconds - (now - self.since)
        if left <= 0:
            self.gave_up = describe(exc)
            raise StorageUnavailable(self.masked_url, now - self.since, self.gave_up)
        self.retries += 1
        return min(delay, left)

    def _back(self) -> None:
        if self.since is not None:
            self.back_at = time.monotonic()
            log(f"storage {self.masked_url} is back after {self.back_at - self.since:.1f}s")
            self.since = None
