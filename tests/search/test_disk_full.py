"""A full disk for real: a size-limited tmpfs gives ENOSPC.

Caches (decode, phash, features) go on without the entry with one progress line; result
files (models, reports) raise `DiskFullError` (one line, exit code 74 from the CLI); no
partial file is left either way. Mounting needs root: elsewhere these tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.disk import DiskFullError, is_disk_full
from data.cache import atomic_save_arrays, atomic_write_bytes
from tests.conftest import run_cli
from tests.search.helpers import trials_of, write_config

NOT_PERMITTED = ("permission denied", "not permitted", "must be superuser", "only root")


def _mount_tmpfs(where: Path, options: str) -> None:
    """Mount a tmpfs at `where`; skip the test only where mounting is not permitted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root and mount(8)")
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        if any(text in result.stderr.lower() for text in NOT_PERMITTED):
            pytest.skip(f"mounting a tmpfs is not permitted here: {result.stderr.strip()}")
        pytest.fail(f"mount failed: {result.stderr.strip()}")


def _unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty 32 KiB file system: any bigger file fills it mid-write."""
    where = tmp_path / "small"
    _mount_tmpfs(where, "size=32k,mode=0755")
    try:
        yield where
    finally:
        _unmount(where)


def _full_disk(where: Path, kind: str) -> Iterator[Path]:
    """A file system with no byte left (a filler file), or with no inode left for a folder."""
    options = "size=32k" if kind == "no space" else "size=1m,nr_inodes=1"
    _mount_tmpfs(where, options + ",mode=0755")
    try:
        if kind == "no space":
            with open(where / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 4096)
        yield where
    finally:
        _unmount(where)


@pytest.fixture(params=["no space", "no inode"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    yield from _full_disk(tmp_path / "full", request.param)


@pytest.fixture
def filled_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _full_disk(tmp_path / "full", "no space")


def _left(folder: Path) -> list[str]:
    """The files left under `folder`, besides the filler and the (empty) lock files."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "filler" and not p.name.endswith(".lock")
    )


def _cache_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "going on without the cache" in line]


def test_atomic_writes_on_a_full_disk_leave_the_old_file_and_no_partial_one(
    small_disk: Path,
) -> None:
    target = small_disk / "x.npz"
    atomic_write_bytes(target, b"old", durable=False)
    with pytest.raises(OSError) as caught:
        atomic_save_arrays(target, x=np.zeros(100_000, np.uint8))  # fails with the file open
    assert is_disk_full(caught.value)
    with pytest.raises(OSError):
        atomic_write_bytes(small_disk / "y.json", b"y" * 100_000)
    assert sorted(p.name for p in small_disk.iterdir()) == ["x.npz"]
    assert target.read_bytes() == b"old"


def test_decode_and_phash_caches_on_a_full_disk_go_on_without_them(
    full_disk: Path,
    tmp_path: Path,
    tiny_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from search.config import load_config
    from search.study_data import load_train_val, prepare

    config = load_config(str(write_config(tmp_path / "c.yaml"))).with_overrides(
        data_path=str(tiny_data)
    )
    monkeypatch.setenv("TUMOR_SEARCH_CACHE", str(full_disk / "cache"))
    arrays = load_train_val(prepare(config), 32)
    lines = _cache_lines(capsys.readouterr().err)
    assert [line.split(":")[0] for line in lines] == ["phash cache", "decode cache"], lines
    assert all(": no space left on device in " in line for line in lines), lines
    assert _left(full_disk) == []
    monkeypatch.setenv("TUMOR_SEARCH_CACHE", str(tmp_path / "roomy"))
    reference = load_train_val(prepare(config), 32)
    np.testing.assert_array_equal(arrays.x_train, reference.x_train)
    np.testing.assert_array_equal(arrays.y_val, reference.y_val)


def test_feature_cache_on_a_full_disk_goes_on_without_it(
    full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.weights import parse_weights
    from search.training.feature_cache import get_features

    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(96, 32, 32, 3), dtype=np.uint8)
    x_val = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    for _ in range(2):  # the second trial computes again, and says nothing more
        features = get_features(
            "small_cnn", parse_weights("none"), 32, x_train, x_val, str(full_disk)
        )
        assert not features.hit and len(features.train) == 96 and len(features.val) == 16
    lines = _cache_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("feature cache: no space left on device in ")
    assert _left(full_disk) == []


def test_a_model_save_on_a_full_disk_raises_and_leaves_no_file(small_disk: Path) -> None:
    from models.backend import keras_module
    from search.results.outputs import save_model

    keras = keras_module()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(4)])
    target = small_disk / "best" / "model.keras"
    with pytest.raises(DiskFullError) as caught:
        save_model(model, target)
    assert str(caught.value) == (
        f"no space left on device writing {target}; free some space or choose another --out"
    )
    assert list(target.parent.iterdir()) == []


def _empty_study(path: Path) -> str:
    """A tumor-search study with no trials (its report is still the whole of plotly.js)."""
    import optuna

    from search.config import load_config

    storage = f"sqlite:///{path}"
    config = load_config("demo")
    study = optuna.create_study(study_name="fake", storage=storage, direction="maximize")
    study.set_user_attr("config", config.to_dict())
    study.set_user_attr("trials", config.trials)
    return storage


def test_a_report_on_a_full_disk_raises_and_leaves_no_file(
    small_disk: Path, tmp_path: Path
) -> None:
    from search.results.report import write_report

    storage = _empty_study(tmp_path / "studies.db")
    with pytest.raises(DiskFullError, match="no space left on device writing .*r.html"):
        write_report("fake", storage, small_disk / "r.html")
    assert list(small_disk.iterdir()) == []


def test_report_cli_on_a_full_disk_is_one_line_and_exit_74(
    small_disk: Path, tmp_path: Path
) -> None:
    storage = _empty_study(tmp_path / "studies.db")
    out = small_disk / "r.html"
    result = run_cli("report", "--study", "fake", "--storage", storage, "--out", str(out))
    assert result.returncode == 74, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    assert f"no space left on device writing {out}" in result.stderr_lines[0]
    assert list(small_disk.iterdir()) == []


def test_a_trial_goes_on_when_the_cache_disk_is_full(
    filled_disk: Path, tmp_path: Path, tiny_data: Path
) -> None:
    config = write_config(
        tmp_path / "c.yaml", trials=1, training={"epochs": 1}, pruner={"name": "none"}
    )
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = run_cli(
        *("run", "--config", str(config), "--data", str(tiny_data), "--storage", storage),
        *("--study", "full"),
        env={"TUMOR_SEARCH_CACHE": str(filled_disk / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert any(line.startswith("decode cache: ") for line in _cache_lines(result.stderr))
    assert [t.state.name for t in trials_of(storage, "full")] == ["COMPLETE"]
    assert _left(filled_disk) == []


def test_a_growing_feature_entry_keeps_its_old_file_when_the_disk_fills(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.weights import parse_weights
    from search.training.feature_cache import _digest, entry_dir, get_features, key_parts

    rng = np.random.default_rng(1)
    first = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)  # 8 x 128 floats: 4 KiB
    more = rng.integers(0, 256, size=(96, 32, 32, 3), dtype=np.uint8)  # too many for 32 KiB
    weights = parse_weights("none")
    kept = get_features("small_cnn", weights, 32, first, first[:0], str(small_disk))
    parts = key_parts("small_cnn", weights, 32)
    assert parts is not None
    entry = entry_dir(_digest(parts), str(small_disk)) / "features.npz"
    before = entry.read_bytes()
    grown = get_features("small_cnn", weights, 32, more, first, str(small_disk))
    assert grown.computed == 96 and len(grown.train) == 96  # the trial goes on
    assert entry.read_bytes() == before  # the old entry stands, whole
    again = get_features("small_cnn", weights, 32, first, first[:0], str(small_disk))
    assert again.hit and np.array_equal(again.train, kept.train)
    assert "feature cache: no space left on device" in capsys.readouterr().err
