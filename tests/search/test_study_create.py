"""`study create` (and `run`) on a name that is taken: each refusal of search/runtime/study.py's
`_check_same`, through the CLI, and the database left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.conftest import CliResult, assert_bad_input, run_cli
from tests.search.helpers import create_cli, create_tiny_study, write_config

# The two commands that create a study when it is missing (`run` also trains: each case
# here is refused before that).
COMMANDS = ("study create", "run")


def _create(command: str, name: str, config: Path, data: Path, storage: str) -> CliResult:
    return create_cli(name, config, data, storage, command)


def _snapshot(storage: str) -> dict[str, Any]:
    """Everything a refused command must leave as it was: studies, their attributes, trials."""
    out: dict[str, Any] = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[summary.study_name] = (
            dict(study.user_attrs),
            [(t.number, t.state, t.params) for t in study.get_trials(deepcopy=False)],
        )
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_study_made_without_tumor_search_is_refused(
    command: str, tmp_path: Path, tiny_data: Path
) -> None:
    """A study of that name made by bare Optuna (no stored config) is never adopted."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="taken", storage=storage).enqueue_trial({"x": 1})
    before = _snapshot(storage)
    result = _create(command, "taken", write_config(tmp_path / "c.yaml"), tiny_data, storage)
    assert_bad_input(result, "'taken'", "not made by tumor-search")
    assert _snapshot(storage) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_study_with_another_config_is_refused(
    command: str, tmp_path: Path, tiny_data: Path
) -> None:
    """The same name with a different search space: refused, naming the way out."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    create_tiny_study(tmp_path, tiny_data, storage, "mine")
    before = _snapshot(storage)
    other = write_config(tmp_path / "other.yaml", space={"dropout": {"low": 0.0, "high": 0.5}})
    result = _create(command, "mine", other, tiny_data, storage)
    assert_bad_input(result, "'mine'", "already exists with a different config", "--study")
    assert _snapshot(storage) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_study_with_other_data_is_refused(
    command: str, tmp_path: Path, tiny_data: Path, phantom_dir: Path
) -> None:
    """The same name and config on another dataset: refused, showing both fingerprints."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = create_tiny_study(tmp_path, tiny_data, storage, "mine")
    before = _snapshot(storage)
    fingerprint = before["mine"][0]["data_fingerprint"]
    result = _create(command, "mine", config, phantom_dir, storage)
    assert_bad_input(result, "'mine'", "already exists with different data", fingerprint[:12])
    assert _snapshot(storage) == before


def test_the_budget_and_the_data_folder_may_change_on_resume(
    tmp_path: Path, tiny_data: Path
) -> None:
    """What `_check_same` lets through: the same config with another trial budget, and the
    same images copied to another folder, resume the study instead of being refused."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = create_tiny_study(tmp_path, tiny_data, storage, "mine")
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_data, copy)
    resumed = run_cli(
        "study",
        "create",
        "--study",
        "mine",
        "--config",
        str(config),
        "--data",
        str(copy),
        "--storage",
        storage,
        "--trials",
        "7",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming study 'mine'" in resumed.stderr
    assert optuna.get_all_study_names(storage) == ["mine"]
