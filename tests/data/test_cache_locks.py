"""Cache entry locks (filelock) against `cache clear`, and the one atomic writer."""

from __future__ import annotations

import shutil
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from data.cache import (
    atomic_path,
    atomic_save_arrays,
    atomic_write_bytes,
    default_mode,
    entry_lock,
    load_arrays,
    lock_path,
    try_entry_lock,
)


def test_a_writer_waiting_while_clear_removes_the_folder_locks_a_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "features" / "k"
    data = folder / "features.npz"
    waiting, holding, done = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        waiting.set()
        with entry_lock(data):  # blocks until the first holder lets go
            holding.set()
            done.wait(10)

    with entry_lock(data):
        thread = threading.Thread(target=writer)
        thread.start()
        waiting.wait(10)
        time.sleep(0.2)  # the writer now polls the lock file in the folder
        shutil.rmtree(folder)  # as `cache clear` removes a feature entry while it holds the lock
    assert holding.wait(10)
    assert lock_path(data).is_file()  # the writer made the folder and the lock file again
    with try_entry_lock(data) as held:
        assert not held
    done.set()
    thread.join(10)
    with try_entry_lock(data) as held:
        assert held


def test_try_entry_lock_is_refused_while_another_holds_the_entry(tmp_path: Path) -> None:
    data = tmp_path / "images" / "train.npz"
    with entry_lock(data), try_entry_lock(data) as held:
        assert not held
    assert lock_path(data).is_file()  # kept on release: waiters share one inode
    with try_entry_lock(data) as held:
        assert held


def test_atomic_path_renames_on_success_with_the_default_mode(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.keras"
    with atomic_path(target, suffix=".keras") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".keras")
        assert tmp.name.startswith(".model.keras.")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == default_mode()
    assert [p.name for p in target.parent.iterdir()] == ["model.keras"]


def test_atomic_path_keeps_the_old_file_and_no_temporary_on_error(tmp_path: Path) -> None:
    target = tmp_path / "best.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_the_writers_leave_only_their_file(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "meta.json") as tmp:  # the name `cache clear` knows as a leftover
        assert tmp.name.startswith(".meta.json.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"{}")
    atomic_write_bytes(tmp_path / "meta.json", b"[]", durable=False)
    atomic_save_arrays(tmp_path / "x.npz", x=np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "x.npz"]
    assert (tmp_path / "meta.json").read_bytes() == b"[]"
    loaded = load_arrays(tmp_path / "x.npz")
    assert loaded is not None and loaded["x"].tolist() == [0, 1, 2]


def test_the_default_mode_reads_the_umask_without_changing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import data.cache as cache

    cache._umask.cache_clear()
    calls: list[int] = []
    real_umask = os.umask

    def watched(mask: int) -> int:
        calls.append(mask)
        return real_umask(mask)

    monkeypatch.setattr(os, "umask", watched)
    try:
        mode = cache.default_mode()
        probe = tmp_path / "probe"
        probe.touch()  # what open() gives a new file
        assert mode == stat.S_IMODE(probe.stat().st_mode)
        assert calls == []  # another thread creating a file meanwhile never sees umask 0
    finally:
        cache._umask.cache_clear()
    assert cache._umask_from_status("Name:\tpython\nUmask:\t0027\nState:\tR") == 0o027
    assert cache._umask_from_status("Name:\tpython\n") is None
