"""Study config validation: every error names the bad key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from search.config import StudyConfig, load_config
from search.errors import ConfigError
from tests.search.helpers import TINY_CONFIG


def _with(path: str, value: object) -> dict:
    raw = copy.deepcopy(TINY_CONFIG)
    node = raw
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return raw


def test_shipped_configs_validate_and_round_trip() -> None:
    for name in ("demo", "kaggle"):
        config = load_config(name)
        assert StudyConfig.from_dict(config.to_dict()) == config
    kaggle = load_config("kaggle")
    assert kaggle.weights == "imagenet" and kaggle.data.image_size == 224 and kaggle.trials == 100
    assert kaggle.pruner.name == "hyperband" and kaggle.training.epochs == 30
    assert {"mobilenet", "xception", "convnext_tiny"} <= set(kaggle.space.backbones)
    assert kaggle.space.get("fine_tune") is not None
    demo = load_config("demo")
    assert demo.weights == "none" and demo.data.image_size == 64 and demo.pruner.name == "median"
    assert "small_cnn" in demo.space.backbones


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        ("colour", "blue", ["unknown key colour", "allowed keys"]),
        ("training.epoch", 3, ["unknown key training.epoch", "epochs"]),
        ("training.refit_epochs", 0, ["training.refit_epochs", "at least 1, got 0"]),
        ("training.refit_epochs", "long", ["training.refit_epochs"]),
        ("space.dropout", {"low": 0.0, "high": 1.5}, ["space.dropout", "1.5"]),
        ("space.learning_rate", {"low": 0.0, "high": 0.1}, ["space.learning_rate", "positive"]),
        (
            "space.learning_rate",
            {"low": 0.0, "high": 0.1, "log": True},
            ["space.learning_rate", "log"],
        ),
        ("space.backbone", ["resnet9000"], ["unknown backbone", "small_cnn", "convnext_tiny"]),
        ("space.backbone", ["xception"], ["data.image_size", "minimum input size of 71"]),
        ("space.fine_tune", [0.0, 1.0], ["space.fine_tune", "constant features"]),
        ("space.head_depth", {"low": 0, "high": 7}, ["space.head_depth", "0-4"]),
        ("space.head_width", {"low": 8.5, "high": 64}, ["space.head_width", "integer"]),
        ("space.optimizer", ["sgd"], ["space.optimizer", "adam"]),
        ("space.shape", [1], ["unknown key space.shape", "head_depth"]),
        ("sampler.name", "bayes", ["sampler.name", "tpe"]),
        ("pruner.name", "sometimes", ["pruner.name", "hyperband"]),
        ("objective.metric", "f1", ["objective.metric", "val_accuracy"]),
        ("data.split", "random", ["data.split", "official"]),
        ("data.val_fraction", 1.2, ["data.val_fraction"]),
        ("trials", 0, ["trials"]),
        ("trials", "many", ["trials", "int"]),
        ("weights", "weights.txt", ["weights", "imagenet"]),
        ("training.augmentation", {"flip": True, "spin": 3}, ["training.augmentation.spin"]),
    ],
)
def test_bad_values_name_the_key(path: str, value: object, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_dict(_with(path, value))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nspace: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML syntax error at line"):
        load_config(str(path))


def test_missing_config_names_the_builtin_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="demo, demo-pareto, kaggle"):
        load_config(str(tmp_path / "nope.yaml"))


def test_non_mapping_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))


def test_gp_sampler_without_its_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"needs torch: pip install 'tumor-search\[gp\]'"):
        StudyConfig.from_dict(_with("sampler", {"name": "gp"}))


def test_gp_sampler_runs_a_study(tmp_path: Path, tiny_data: Path) -> None:
    """The gp extra is installed by `make test`: Optuna's GPSampler draws the trials after
    the first (n_startup_trials 1) of a real study."""
    import optuna

    from search.config import load_config
    from search.runtime.study import make_sampler
    from tests.conftest import run_cli
    from tests.search.helpers import write_config

    path = write_config(
        tmp_path / "gp.yaml",
        trials=3,
        training={"epochs": 1},
        sampler={"name": "gp", "seed": 0, "n_startup_trials": 1},
        pruner={"name": "none"},
    )
    assert isinstance(make_sampler(load_config(str(path))), optuna.samplers.GPSampler)
    storage = f"sqlite:///{tmp_path / 'gp.db'}"
    result = run_cli("run", "--config", str(path), "--data", str(tiny_data), "--storage", storage)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert len({t.params["learning_rate"] for t in trials}) == 3


def test_yaml_booleans_are_accepted_for_on_off_values(tmp_path: Path) -> None:
    """`mixed_precision: on` is YAML's boolean true; it means the word 'on'."""
    raw = copy.deepcopy(TINY_CONFIG)
    path = tmp_path / "switches.yaml"
    text = yaml.safe_dump(raw, sort_keys=False).replace(
        "training:\n", "training:\n  mixed_precision: on\n  xla: off\n", 1
    )
    path.write_text(text)
    training = load_config(str(path)).training
    assert (training.mixed_precision, training.xla) == ("on", "off")
    with pytest.raises(ConfigError, match="training.xla"):
        StudyConfig.from_dict(_with("training.xla", "maybe"))


@pytest.mark.parametrize("section", ["training", "data", "sampler", "objective", "space"])
def test_a_section_of_the_wrong_type_is_one_line_and_exit_2(tmp_path: Path, section: str) -> None:
    from tests.conftest import assert_bad_input, run_cli

    raw = copy.deepcopy(TINY_CONFIG)
    raw[section] = [1, 2]
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_cli(
        "study", "create", "--config", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"
    )
    assert_bad_input(result, section, "mapping")
    assert not (tmp_path / "s.db").exists()


def test_the_config_timeout_works_like_the_timeout_flag(tmp_path: Path, tiny_data: Path) -> None:
    """A worker starts no trial once the config's `timeout` has passed (--timeout wins)."""
    import optuna

    from tests.conftest import run_cli
    from tests.search.helpers import create_tiny_study

    storage = f"sqlite:///{tmp_path / 't.db'}"
    create_tiny_study(tmp_path, tiny_data, storage, "timed", timeout=0.001)
    result = run_cli("worker", "--study", "timed", "--storage", storage, "--data", str(tiny_data))
    assert result.returncode == 0, result.stderr
    assert "worker timeout of 0.001s reached" in result.stderr
    assert (
        optuna.load_study(study_name="timed", storage=storage).get_trials(
            states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
        )
        == []
    )
