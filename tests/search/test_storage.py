from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb import models

from search.errors import StorageError, mask_password, one_line
from search.runtime.locks import creation_lock
from search.runtime.storage import open_storage, parse_url, resolve_url


def test_storage_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_url(None) == "sqlite:///studies.db"
    monkeypatch.setenv("TUMOR_SEARCH_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///arg.db") == "sqlite:///arg.db"


@pytest.mark.parametrize(
    "url", ["not a url", "sqlite:/", "ftp://host/x", "postgresql+nodriver://u@h/db", "sqlite://"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError):
        parse_url(url)


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no study database"):
        open_storage(f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()


def test_passwords_are_masked() -> None:
    text = "cannot reach postgresql+psycopg2://alice:s3cret@db:5432/x and mysql://bob:pw@h/y"
    assert "s3cret" not in mask_password(text) and "pw@" not in mask_password(text)
    assert "alice:***@db" in one_line(text)


def test_unreachable_postgres_is_one_clear_error() -> None:
    with pytest.raises(StorageError) as info:
        open_storage("postgresql+psycopg2://user:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(info.value) and "cannot open storage" in str(info.value)


def test_plain_open_waits_while_another_process_creates_the_tables(tmp_path: Path) -> None:
    """Optuna writes its version rows on any open that finds them missing, so a plain open
    meeting half-made tables must wait for the creator, not race it for those rows."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    opened: list[Any] = []
    with creation_lock(parse_url(url)):
        # What a creator has made half-way: the tables, not yet Optuna's version rows.
        engine = sqlalchemy.create_engine(url)
        models.BaseModel.metadata.create_all(engine)
        engine.dispose()
        opener = threading.Thread(target=lambda: opened.append(open_storage(url)), daemon=True)
        opener.start()
        opener.join(1.0)
        assert opener.is_alive() and not opened  # it waits for the lock
        optuna.storages.RDBStorage(url)  # the creator finishes: version rows written
    opener.join(30)
    assert len(opened) == 1
    assert optuna.get_all_study_names(url) == []
