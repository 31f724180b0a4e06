"""Locks shared by the processes of one storage: creating tables, claiming a study's trials.

An flock next to an SQLite file; a PostgreSQL advisory lock or MySQL's GET_LOCK held by one
connection (closing a dropped connection frees it on the server).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from search.runtime.outage import LockNotGranted

if TYPE_CHECKING:
    from search.runtime.storage import StorageURL


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def file_lock(path: Path) -> FileLock:
    """An exclusive lock on `path` (an flock), held in a `with` block; it waits for other holders.

    A new instance per use: filelock makes an instance reentrant, but two instances exclude
    each other like two processes (within one thread filelock raises instead of deadlocking).
    """
    return FileLock(path)


MYSQL_LOCK_WAIT = 600  # seconds GET_LOCK waits before it gives up (returns 0)


def lock_not_granted(key: str, result: Any, wait: int) -> LockNotGranted:
    """The error for MySQL's GET_LOCK not granting the lock: 0 after `wait` seconds (another
    holder kept it), NULL on an error on the server."""
    why = f"timed out after {wait}s" if result == 0 else f"failed on the server ({result!r})"
    return LockNotGranted(
        f"could not take the database lock {key} (MySQL GET_LOCK {why}); giving up"
    )


@contextlib.contextmanager
def _advisory_lock(
    conn: Any, backend: str, key: int, wait: int = MYSQL_LOCK_WAIT
) -> Iterator[None]:
    """A database-wide named lock held by `conn` (PostgreSQL advisory lock, MySQL GET_LOCK).

    PostgreSQL's waits as long as it takes; MySQL's waits `wait` seconds and says whether
    it got the lock, which is checked.

    Raises:
        LockNotGranted: GET_LOCK did not grant the lock (the worker ends with exit 75).
    """
    from sqlalchemy import text

    if backend == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        release, arg = "SELECT pg_advisory_unlock(:k)", key
    else:
        release, arg = "SELECT RELEASE_LOCK(:k)", str(key)
        got = conn.execute(text("SELECT GET_LOCK(:k, :w)"), {"k": arg, "w": wait}).scalar()
        if got != 1:
            raise lock_not_granted(arg, got, wait)
    try:
        yield
    finally:
        try:
            conn.execute(text(release), {"k": arg})
            conn.commit()
        except Exception:  # noqa: BLE001 - a dropped connection: closing it frees the lock
            conn.invalidate()


def _lock_key(name: str) -> int:
    return zlib.crc32(f"tumor-search:{name}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def creation_lock(
    parsed: StorageURL, required: bool = True, engine_options: dict[str, Any] | None = None
) -> Iterator[None]:
    """Held while Optuna creates or initialises the tables of `parsed`'s database.

    Args:
        required: When False (a plain open) and no SQLite lock file can be made next to
            the database (a read-only folder), go on without it, so that a read-only
            copy of a study can still be read.
        engine_options: SQLAlchemy's engine arguments for a database server (timeouts:
            `search.runtime.storage.engine_kwargs`).
    """
    if parsed.sqlite_path is not None:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(file_lock(_lock_path(parsed.sqlite_path)))
            except OSError:
                if required:
                    raise
            yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(parsed.url, poolclass=NullPool, **(engine_options or {}))
    try:
        with engine.connect() as conn, _advisory_lock(conn, parsed.backend, _lock_key("tables")):
            yield
    finally:
        engine.dispose()


class StudyLock:
    """A lock shared by every worker of one study, held while a worker claims a trial.

    It makes "count the trials, then create one" atomic, so concurrent workers meet the
    study's budget exactly: an flock next to an SQLite file, a PostgreSQL advisory lock, or
    MySQL's GET_LOCK.
    """

    def __init__(self, storage: Any, study_name: str) -> None:
        from search.runtime.optuna_compat import outage_of_storage, rdb
        from search.runtime.proxy import is_proxy

        self._outage = outage_of_storage(storage)
        self._rdb = rdb(storage)
        self._proxy = is_proxy(self._rdb)
        if self._proxy:  # the proxy takes the lock where it counts (search.runtime.proxy)
            return
        self._key = _lock_key(f"study:{study_name}")
        url = self._rdb.engine.url
        self._dialect = url.get_backend_name()
        self._path = _lock_path(Path(url.database)) if self._dialect == "sqlite" else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._proxy:
            yield
            return
        if self._path is not None:
            with file_lock(self._path):
                yield
            return
        # Taking the lock is retried through an outage, as every other storage call is.
        with self._outage.call(self._take) if self._outage else self._take():
            yield

    def _take(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        try:
            conn = stack.enter_context(self._rdb.engine.connect())
            stack.enter_context(_advisory_lock(conn, self._dialect, self._key))
        except BaseException:
            stack.close()
            raise
        return stack
