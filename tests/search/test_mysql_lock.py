"""MySQL's GET_LOCK, against a real MariaDB: a lock it does not grant ends the worker
instead of letting it go on without the lock."""

from __future__ import annotations

import time

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from search.runtime.locks import _advisory_lock, _lock_key
from search.runtime.outage import LockNotGranted, StorageUnavailable


def test_get_lock_held_elsewhere_times_out_and_is_not_taken(mysql_url: str) -> None:
    engine = sqlalchemy.create_engine(mysql_url, poolclass=NullPool)
    key = _lock_key(f"test-{time.time_ns()}")
    entered = []
    try:
        with engine.connect() as holder, engine.connect() as other:
            with _advisory_lock(holder, "mysql", key):
                start = time.monotonic()
                with (
                    pytest.raises(LockNotGranted, match=r"GET_LOCK timed out after 1s"),
                    _advisory_lock(other, "mysql", key, wait=1),
                ):
                    entered.append(True)  # before the check, the worker went on here
                assert 0.9 < time.monotonic() - start < 10
            assert not entered
            with _advisory_lock(other, "mysql", key, wait=1):  # released: granted now
                entered.append(True)
                holds = other.execute(sqlalchemy.text("SELECT IS_USED_LOCK(:k)"), {"k": str(key)})
                assert holds.scalar() is not None
    finally:
        engine.dispose()
    assert entered == [True]


def test_a_lock_not_granted_ends_the_worker_like_an_unreachable_storage() -> None:
    from search.runtime.locks import lock_not_granted

    error = lock_not_granted("42", None, 600)
    assert isinstance(error, StorageUnavailable) and not isinstance(error, Exception)
    assert error.exit_code == 75
    assert str(error) == (
        "could not take the database lock 42 (MySQL GET_LOCK failed on the server (None)); "
        "giving up"
    )
