"""Optuna storage from a URL alone, built in one place.

``--storage``, else ``$TUMOR_SEARCH_STORAGE``, else ``sqlite:///studies.db``. SQLite serves one
machine (busy timeout and WAL so the dashboard reads while workers write); PostgreSQL
(``postgresql+psycopg2://...``) serves workers on several machines.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from search.errors import StorageError, mask_password

DEFAULT_STORAGE = "sqlite:///studies.db"
STORAGE_ENV = "TUMOR_SEARCH_STORAGE"
SQLITE_TIMEOUT_S = 60
SUPPORTED = ("sqlite", "postgresql", "mysql")


def resolve_url(url: str | None) -> str:
    """The storage URL in force: the argument, else the environment, else the default."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


@dataclass(frozen=True)
class StorageURL:
    """A parsed, checked storage URL."""

    url: str
    backend: str  # sqlite | postgresql | mysql
    sqlite_path: Path | None

    @property
    def masked(self) -> str:
        return mask_password(self.url)


def parse_url(url: str) -> StorageURL:
    """Check a storage URL's form (no connection is made).

    Raises:
        StorageError: not a URL SQLAlchemy understands, or not a supported database.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(
            f"malformed storage URL {mask_password(url)!r}: expected e.g. sqlite:///studies.db or "
            f"postgresql+psycopg2://user:password@host:5432/db ({exc})"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise StorageError(
            f"unsupported storage {backend!r} in {mask_password(url)!r}; use sqlite:///FILE or postgresql+psycopg2://..."
        )
    try:
        parsed.get_dialect()
    except Exception as exc:  # NoSuchModuleError and friends: a driver that is not installed
        raise StorageError(f"no database driver for {parsed.drivername!r} ({exc})") from None
    sqlite_path = None
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise StorageError("an in-memory SQLite storage cannot be shared; use sqlite:///FILE")
        sqlite_path = Path(database).expanduser()
    return StorageURL(url, backend, sqlite_path)


def _engine_kwargs(parsed: StorageURL) -> dict[str, Any]:
    if parsed.backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    if parsed.backend == "postgresql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def open_storage(url: str | None, create: bool = False) -> Any:
    """An `optuna.storages.RDBStorage` for `url`.

    Args:
        url: Storage URL (None: see `resolve_url`).
        create: Create the tables (and an SQLite file) if missing. Without it a missing
            SQLite file is an error, so a mistyped path never leaves an empty database behind.

    Raises:
        StorageError: malformed URL, missing SQLite file, or a database that cannot be reached.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    parsed = parse_url(resolve_url(url))
    if parsed.sqlite_path is not None:
        path = parsed.sqlite_path
        if not path.exists() and not create:
            raise StorageError(
                f"no study database at {path} (storage {parsed.masked}); create a study first"
            )
        if create and not path.parent.is_dir():
            raise StorageError(f"cannot create {path}: folder {path.parent} does not exist")
    kwargs: dict[str, Any] = {
        "engine_kwargs": _engine_kwargs(parsed),
        "skip_table_creation": not create,
    }
    try:
        with _quiet_optuna_experimental():
            # Every open takes the lock, not only creation: RDBStorage writes Optuna's
            # version rows (its own and Alembic's) whenever it finds them missing, so a
            # plain open that meets tables another process is still creating races it
            # for those rows ("UNIQUE constraint failed: alembic_version.version_num").
            with _creation_lock(parsed, required=create):
                storage = optuna.storages.RDBStorage(parsed.url, **kwargs)
                if create and parsed.sqlite_path is not None:
                    _enable_wal(storage)
            if parsed.sqlite_path is not None:
                _sync_normal(storage)
            if not create:
                storage.get_all_studies()  # fails now, not later, if the tables are missing
    except (SQLAlchemyError, OSError, optuna.exceptions.StorageInternalError) as exc:
        cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
        raise StorageError(
            f"cannot open storage {parsed.masked}: {_first_line(cause or exc)}"
        ) from None
    except RuntimeError as exc:  # optuna's schema-version check
        raise StorageError(f"storage {parsed.masked} is not usable: {_first_line(exc)}") from None
    return storage


def has_tables(url: str | None) -> bool:
    """Whether the storage already holds Optuna's tables (never creates anything).

    Raises:
        StorageError: malformed URL or a server that cannot be reached.
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    parsed = parse_url(resolve_url(url))
    if parsed.sqlite_path is not None and not parsed.sqlite_path.exists():
        return False
    engine = sqlalchemy.create_engine(parsed.url, **_engine_kwargs(parsed))
    try:
        with engine.connect() as conn:
            return sqlalchemy.inspect(conn).has_table("studies")
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot open storage {parsed.masked}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return mask_password(text.splitlines()[0] if text else type(exc).__name__)


def _sync_normal(storage: Any) -> None:
    """In WAL mode, sync at checkpoints rather than at every commit (SQLite's advice for
    WAL): a trial's dozen attribute writes stop costing a disk flush each."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections made so far reconnect with the pragma


def _enable_wal(storage: Any) -> None:
    """Readers (the dashboard) do not block writers (workers) in WAL mode; it persists."""
    from sqlalchemy import text

    with storage.engine.connect() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))


@contextlib.contextmanager
def _quiet_optuna_experimental() -> Iterator[None]:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def file_lock(path: Path) -> FileLock:
    """An exclusive lock on `path` (an flock), held in a `with` block; it waits for other holders.

    A new instance per use: filelock makes an instance reentrant, but two instances exclude
    each other like two processes (within one thread filelock raises instead of deadlocking).
    """
    return FileLock(path)


@contextlib.contextmanager
def _advisory_lock(conn: Any, backend: str, key: int) -> Iterator[None]:
    """A database-wide named lock held by `conn` (PostgreSQL advisory lock, MySQL GET_LOCK)."""
    from sqlalchemy import text

    if backend == "postgresql":
        acquire, release, arg = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)", key
    else:
        acquire, release, arg = "SELECT GET_LOCK(:k, 600)", "SELECT RELEASE_LOCK(:k)", str(key)
    conn.execute(text(acquire), {"k": arg})
    try:
        yield
    finally:
        conn.execute(text(release), {"k": arg})
        conn.commit()


def _lock_key(name: str) -> int:
    return zlib.crc32(f"tumor-search:{name}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def _creation_lock(parsed: StorageURL, required: bool = True) -> Iterator[None]:
    """Held while Optuna creates or initialises the tables of `parsed`'s database.

    Args:
        required: When False (a plain open) and no SQLite lock file can be made next to
            the database (a read-only folder), go on without it, so that a read-only
            copy of a study can still be read.
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

    engine = sqlalchemy.create_engine(parsed.url, poolclass=NullPool, **_engine_kwargs(parsed))
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
        from search.runtime.optuna_compat import rdb

        self._storage = rdb(storage)
        self._key = _lock_key(f"study:{study_name}")
        url = self._storage.engine.url
        self._backend = url.get_backend_name()
        self._path = _lock_path(Path(url.database)) if self._backend == "sqlite" else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._path is not None:
            with file_lock(self._path):
                yield
            return
        with self._storage.engine.connect() as conn, _advisory_lock(conn, self._backend, self._key):
            yield
