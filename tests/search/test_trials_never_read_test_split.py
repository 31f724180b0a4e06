"""No trial may read the test split: a guard on the one function that loads splits."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import search.study_data as study_data
from search.config import load_config
from search.runtime.study import create_study
from search.runtime.worker import run_worker
from search.study_data import prepare
from tests.search.helpers import write_config


class ForbiddenSplitRead(AssertionError):
    pass


@pytest.fixture
def guarded_load_split(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = study_data.load_split

    def guarded(manifest, root, split, size, cache_dir=None):  # noqa: ANN001, ANN202
        seen.append(split)
        if split == "test":
            raise ForbiddenSplitRead("the test split was loaded")
        return original(manifest, root, split, size, cache_dir)

    monkeypatch.setattr(study_data, "load_split", guarded)
    return seen


def test_a_whole_study_never_loads_the_test_split(
    tmp_path: Path, tiny_data: Path, guarded_load_split: list[str]
) -> None:
    config = load_config(str(write_config(tmp_path / "c.yaml", trials=2))).with_overrides(
        data_path=str(tiny_data)
    )
    storage = f"sqlite:///{tmp_path / 's.db'}"
    create_study("guarded", storage, config, prepare(config))
    report = run_worker("guarded", storage)
    assert report.completed == 2 and report.failed == 0
    assert set(guarded_load_split) == {"train", "val"}
    study = optuna.load_study(study_name="guarded", storage=storage)
    assert all("fail_reason" not in t.user_attrs for t in study.trials)


def test_the_guard_can_fail(tiny_data: Path, tmp_path: Path, guarded_load_split: list[str]) -> None:
    """The same guard catches train-best, which must read the test split."""
    config = load_config(str(write_config(tmp_path / "c.yaml"))).with_overrides(
        data_path=str(tiny_data)
    )
    with pytest.raises(ForbiddenSplitRead):
        study_data.load_test(prepare(config), 32)
