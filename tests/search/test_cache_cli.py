"""`tumor-search cache info` and `tumor-search cache clear [--older-than DAYS]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from data.cache import atomic_save_arrays, atomic_write_bytes, entry_lock, lock_path, try_entry_lock
from data.decode import cache_path, load_split
from data.discovery import scan
from data.split import SplitManifest, SplitPolicy, make_manifest
from tests.conftest import ROOT, CliResult, assert_bad_input, run_cli

DAY = 86400


@pytest.fixture(scope="module")
def manifest(phantom_dir: Path) -> SplitManifest:
    return make_manifest(scan(phantom_dir), SplitPolicy("official", seed=0))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache folder of this test alone (`clear` must not empty the session's)."""
    return tmp_path / "cache"


def _cli(cache: Path, *args: str) -> CliResult:
    return run_cli("cache", *args, env={"TUMOR_SEARCH_CACHE": str(cache)})


def _info(cache: Path) -> dict:
    result = _cli(cache, "info", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _features_entry(cache: Path, key: str, age_days: float = 0) -> Path:
    """A feature entry as `search.training.feature_cache` writes it: data, meta and lock files."""
    folder = cache / "features" / key
    with entry_lock(folder / "features.npz"):
        atomic_save_arrays(folder / "features.npz", train=np.zeros((4, 8), np.float32))
        atomic_write_bytes(folder / "meta.json", b"{}")
    _age(folder, age_days)
    return folder


def _age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    for file in [path] if path.is_file() else list(path.iterdir()):
        os.utime(file, (stamp, stamp))


def _files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()]


def test_info_on_an_empty_cache(cache: Path) -> None:
    summary = _info(cache)
    assert summary["path"] == str(cache) and summary["bytes"] == 0
    assert summary["entries"] == {"images": 0, "features": 0, "jax": 0}
    assert summary["oldest"] is None and summary["oldest_age_s"] is None
    text = _cli(cache, "info")
    assert text.returncode == 0 and "0 entries" in text.stdout and "oldest:   none" in text.stdout


def test_info_counts_entries_per_kind_and_finds_the_oldest(
    cache: Path, manifest: SplitManifest, phantom_dir: Path
) -> None:
    for split in ("train", "val"):
        load_split(manifest, phantom_dir, split, 16, cache_dir=str(cache))
    old = cache_path(manifest, "val", 16, str(cache))
    _age(old, 3)
    _features_entry(cache, "a" * 32, age_days=1)
    summary = _info(cache)
    assert summary["entries"] == {"images": 2, "features": 1, "jax": 0}
    assert summary["bytes"] == sum(p.stat().st_size for p in _files(cache))
    assert summary["bytes_per_kind"]["features"] == sum(
        p.stat().st_size for p in (cache / "features").rglob("*") if p.is_file()
    )
    assert summary["oldest"] == str(old.relative_to(cache))
    assert abs(summary["oldest_age_s"] - 3 * DAY) < 600
    text = _cli(cache, "info").stdout
    assert "images:   2 entries" in text and "features: 1 entries" in text
    assert "oldest:   3.0 days" in text


def test_clear_older_than_removes_old_entries_and_keeps_fresh_ones(
    cache: Path, manifest: SplitManifest, phantom_dir: Path
) -> None:
    for split in ("train", "val"):
        load_split(manifest, phantom_dir, split, 16, cache_dir=str(cache))
    old_images = cache_path(manifest, "train", 16, str(cache))
    _age(old_images, 10)
    old_features = _features_entry(cache, "o" * 32, age_days=10)
    fresh_features = _features_entry(cache, "f" * 32, age_days=1)
    (cache / "jax").mkdir()
    old_step, fresh_step = cache / "jax" / "jit_train_step-o-cache", cache / "jax" / "jit_f-cache"
    old_step.write_bytes(b"x" * 100)
    fresh_step.write_bytes(b"y" * 10)
    _age(old_step, 10)
    assert _info(cache)["entries"]["jax"] == 2
    result = _cli(cache, "clear", "--older-than", "5")
    assert result.returncode == 0, result.stderr
    assert "removed 3 entries" in result.stdout
    assert not old_step.exists() and fresh_step.exists()
    assert f"removed {old_features.relative_to(cache)}" in result.stdout
    assert not old_features.exists() and fresh_features.is_dir()
    assert not old_images.exists() and not old_images.with_name("train.npz.lock").exists()
    assert load_split(manifest, phantom_dir, "val", 16, cache_dir=str(cache)).from_cache
    assert not load_split(manifest, phantom_dir, "train", 16, cache_dir=str(cache)).from_cache
    assert _info(cache)["entries"] == {"images": 2, "features": 1, "jax": 1}


def test_clear_removes_every_entry_and_reports_the_bytes_freed(
    cache: Path, manifest: SplitManifest, phantom_dir: Path
) -> None:
    load_split(manifest, phantom_dir, "val", 16, cache_dir=str(cache))
    _features_entry(cache, "a" * 32)
    before = _info(cache)["bytes"]
    result = _cli(cache, "clear", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["removed"]) == 2 and report["kept_busy"] == []
    assert report["bytes_freed"] == before
    assert _files(cache) == []  # data, lock and meta files alike
    assert _info(cache)["entries"] == {"images": 0, "features": 0, "jax": 0}


def test_clear_keeps_an_entry_another_process_is_computing(cache: Path) -> None:
    busy = _features_entry(cache, "b" * 32, age_days=10)
    idle = _features_entry(cache, "i" * 32, age_days=10)
    with entry_lock(busy / "features.npz"):
        result = _cli(cache, "clear")
    assert result.returncode == 0, result.stderr
    assert f"kept {busy.relative_to(cache)} (in use by another process)" in result.stdout
    assert (busy / "features.npz").exists() and not idle.exists()


def test_a_writer_waiting_while_clear_deletes_the_lock_file_locks_the_new_one(
    tmp_path: Path,
) -> None:
    data = tmp_path / "features" / "k" / "features.npz"
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
        time.sleep(0.2)  # the writer now waits on the lock file's old inode
        lock_path(data).unlink()  # as `cache clear` does while it holds the lock
    assert holding.wait(10)
    with try_entry_lock(data) as held:
        assert not held  # the writer holds the lock file that is there now, not the deleted one
    done.set()
    thread.join(10)


@pytest.mark.parametrize("days", ["-1", "soon", "nan"])
def test_bad_older_than_exits_2_with_one_line(cache: Path, days: str) -> None:
    assert_bad_input(_cli(cache, "clear", "--older-than", days), "--older-than", days)


def test_cache_commands_do_not_load_tensorflow(cache: Path) -> None:
    code = (
        "import sys; from search.cli import main; code = main(['cache', 'info']); "
        "sys.exit(3 if 'tensorflow' in sys.modules or 'keras' in sys.modules else code)"
    )
    env = dict(os.environ, TUMOR_SEARCH_CACHE=str(cache))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
