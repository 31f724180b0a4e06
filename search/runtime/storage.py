"""Optuna storage from a URL alone, built in one place.

``--storage``, else ``$TUMOR_SEARCH_STORAGE``, else ``sqlite:///studies.db``. SQLite serves one
machine (busy timeout and WAL so the dashboard reads while workers write); PostgreSQL
(``postgresql+psycopg2://...``) serves workers on several machines.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import StorageError, mask_password
from search.runtime.locks import StudyLock, creation_lock, file_lock

__all__ = ["StudyLock", "file_lock", "open_storage", "parse_url", "resolve_url"]

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

    from search.runtime.proxy import split_url

    try:
        if split_url(url) is not None:  # a storage proxy (search.runtime.proxy)
            return StorageURL(url, "grpc", None)
    except ValueError as exc:
        raise StorageError(str(exc)) from None
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


def engine_kwargs(parsed: StorageURL) -> dict[str, Any]:
    if parsed.backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    if parsed.backend == "postgresql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


def open_storage(
    url: str | None, create: bool = False, wait: float | None = None, proxy: bool = False
) -> Any:
    """An `optuna.storages.RDBStorage` for `url`, or with `proxy` (workers), a client of the
    storage proxy at a ``grpc://HOST:PORT`` URL.

    Args:
        url: Storage URL (None: see `resolve_url`).
        create: Create the tables (and an SQLite file) if missing. Without it a missing
            SQLite file is an error, so a mistyped path never leaves an empty database behind.
        wait: Retry a database that cannot be reached yet (refused, starting up, too many
            clients) this many seconds, then raise `StorageUnavailable` (workers). None:
            fail at once.
        proxy: Accept a storage proxy's URL (only workers run through one).

    Raises:
        StorageError: malformed URL, missing SQLite file, or a database that cannot be reached.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    parsed = parse_url(resolve_url(url))
    if parsed.backend == "grpc":
        return _open_proxy(parsed, wait, proxy)
    if parsed.sqlite_path is not None:
        path = parsed.sqlite_path
        if not path.exists() and not create:
            raise StorageError(
                f"no study database at {path} (storage {parsed.masked}); create a study first"
            )
        if create and not path.parent.is_dir():
            raise StorageError(f"cannot create {path}: folder {path.parent} does not exist")
    try:
        if wait is None:
            return _connect(parsed, create)
        from search.runtime.outage import Outage

        return Outage(parsed.masked, wait).call(_connect, parsed, create)
    except (SQLAlchemyError, OSError, optuna.exceptions.StorageInternalError) as exc:
        cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
        raise StorageError(
            f"cannot open storage {parsed.masked}: {_first_line(cause or exc)}"
        ) from None
    except RuntimeError as exc:  # optuna's schema-version check
        raise StorageError(f"storage {parsed.masked} is not usable: {_first_line(exc)}") from None


def _open_proxy(parsed: StorageURL, wait: float | None, proxy: bool) -> Any:
    from search.runtime.proxy import connect, split_url

    if not proxy:
        raise StorageError(
            f"{parsed.url} is a storage proxy, which serves `worker` only; give "
            "this command the database's URL"
        )
    host, port = split_url(parsed.url) or ("", 0)
    return connect(parsed.url, host, port, wait)


def _connect(parsed: StorageURL, create: bool) -> Any:
    import optuna

    kwargs: dict[str, Any] = {
        "engine_kwargs": engine_kwargs(parsed),
        "skip_table_creation": not create,
    }
    with _quiet_optuna_experimental():
        # Every open takes the lock, not only creation: RDBStorage writes Optuna's
        # version rows (its own and Alembic's) whenever it finds them missing, so a
        # plain open that meets tables another process is still creating races it
        # for those rows ("UNIQUE constraint failed: alembic_version.version_num").
        with creation_lock(parsed, required=create, engine_options=engine_kwargs(parsed)):
            storage = optuna.storages.RDBStorage(parsed.url, **kwargs)
            if create and parsed.sqlite_path is not None:
                _enable_wal(storage)
        if parsed.sqlite_path is not None:
            _sync_normal(storage)
        if not create:
            storage.get_all_studies()  # fails now, not later, if the tables are missing
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
    engine = sqlalchemy.create_engine(parsed.url, **engine_kwargs(parsed))
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
