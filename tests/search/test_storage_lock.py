"""`search.runtime.storage.file_lock` (filelock): the lock beside an SQLite database."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from search.runtime.storage import file_lock


def test_a_second_holder_waits_until_the_first_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "studies.db.lock"
    entered = threading.Event()

    def second() -> None:
        with file_lock(path):
            entered.set()

    with file_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert not entered.is_set()
    assert entered.wait(10)
    thread.join(10)
    assert path.is_file()  # kept on release, so every waiter locks the same file


def test_a_nested_hold_in_one_thread_fails_instead_of_hanging(tmp_path: Path) -> None:
    path = tmp_path / "studies.db.lock"
    with file_lock(path), pytest.raises(RuntimeError, match="Deadlock"), file_lock(path):
        pass
