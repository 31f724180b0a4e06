"""Each config section validates on its own, with the same one-line messages as a whole config."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from search.config import StudyConfig
from search.config_base import read_section
from search.config_fields import (
    DataConfig,
    HeartbeatConfig,
    ObjectiveConfig,
    PrunerConfig,
    SamplerConfig,
    TrainingConfig,
    WorkerConfig,
)
from search.errors import ConfigError
from tests.search.helpers import TINY_CONFIG

SECTIONS = (
    DataConfig,
    TrainingConfig,
    SamplerConfig,
    PrunerConfig,
    ObjectiveConfig,
    HeartbeatConfig,
    WorkerConfig,
)


def _key(cls: type) -> str:
    return cls.__name__.removesuffix("Config").lower()


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_the_defaults_validate(cls: type) -> None:
    assert read_section(cls, {}, "cfg", _key(cls)) == cls()
    assert cls.model_validate(cls().model_dump()) == cls()


@pytest.mark.parametrize(
    ("cls", "raw", "expected"),
    [
        (DataConfig, {"split": "random"}, "cfg: data.split: unknown policy 'random'; allowed: "),
        (DataConfig, {"dedup": "x"}, "cfg: data.dedup: unknown policy 'x'; allowed: "),
        (
            DataConfig,
            {"val_fraction": 1.5},
            "cfg: data.val_fraction: must be between 0 and 1, got 1.5",
        ),
        (
            DataConfig,
            {"test_fraction": 0},
            "cfg: data.test_fraction: must be between 0 and 1, got 0.0",
        ),
        (
            DataConfig,
            {"val_fraction": 0.5, "test_fraction": 0.5},
            "cfg: data: val_fraction + test_",
        ),
        (DataConfig, {"image_size": 8}, "cfg: data.image_size: must be between 16 and 1024 pixels"),
        (TrainingConfig, {"epochs": 0}, "cfg: training.epochs: must be at least 1, got 0"),
        (TrainingConfig, {"early_stopping_patience": -1}, "cfg: training.early_stopping_patience:"),
        (TrainingConfig, {"class_weights": "x"}, "cfg: training.class_weights: unknown value 'x'"),
        (TrainingConfig, {"mixed_precision": "x"}, "cfg: training.mixed_precision: unknown value"),
        (
            TrainingConfig,
            {"xla": "x"},
            "cfg: training.xla: unknown value 'x'; allowed: auto, on, off",
        ),
        (
            TrainingConfig,
            {"lr_schedule": "step"},
            "cfg: training.lr_schedule: unknown value 'step'",
        ),
        (
            TrainingConfig,
            {"augmentation": {"zoom": 1}},
            "cfg: training.augmentation.zoom: must be in [0, 1), got 1.0",
        ),
        (
            SamplerConfig,
            {"name": "bayes"},
            "cfg: sampler.name: unknown sampler 'bayes'; allowed: tpe",
        ),
        (
            SamplerConfig,
            {"n_startup_trials": -1},
            "cfg: sampler.n_startup_trials: must not be negative",
        ),
        (PrunerConfig, {"name": "x"}, "cfg: pruner.name: unknown pruner 'x'; allowed: median"),
        (PrunerConfig, {"reduction_factor": 1}, "cfg: pruner.reduction_factor: must be at least 2"),
        (
            ObjectiveConfig,
            {"metric": "f1"},
            "cfg: objective.metric: unknown metric 'f1'; allowed: ",
        ),
        (
            HeartbeatConfig,
            {"interval": 5, "grace_period": 5},
            "cfg: heartbeat: interval must be at",
        ),
        (
            WorkerConfig,
            {"max_memory_growth": -0.1},
            "cfg: worker.max_memory_growth: must not be neg",
        ),
        (WorkerConfig, {"max_memory_growth": float("nan")}, "cfg: worker.max_memory_growth:"),
    ],
)
def test_a_bad_value_names_its_key(cls: type, raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_section(cls, raw, "cfg", _key(cls))
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message, message


def test_a_section_gives_the_whole_configs_message() -> None:
    """A section's own check is exactly what `StudyConfig.from_dict` reports for it."""
    raw = copy.deepcopy(TINY_CONFIG)
    raw["pruner"]["name"] = "sometimes"
    with pytest.raises(ConfigError) as whole:
        StudyConfig.from_dict(raw, source="cfg")
    with pytest.raises(ConfigError) as alone:
        read_section(PrunerConfig, {"name": "sometimes"}, "cfg", "pruner")
    assert str(whole.value) == str(alone.value)


@pytest.mark.parametrize(
    ("cls", "raw", "expected"),
    [
        (DataConfig, [1], "cfg: data must be a mapping, got list"),
        (DataConfig, {"colour": 1}, "cfg: unknown key data.colour; allowed keys: dedup, "),
        (DataConfig, {"image_size": 2.5}, "cfg: data.image_size: expected int, got 2.5"),
        (DataConfig, {"seed": True}, "cfg: data.seed: expected int, got True"),
        (TrainingConfig, {"feature_cache": "yes"}, "cfg: training.feature_cache: expected bool"),
        (WorkerConfig, {"max_memory_growth": "x"}, "cfg: worker.max_memory_growth: expected float"),
    ],
)
def test_reading_refuses_wrong_types_and_unknown_keys(cls: type, raw: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_section(cls, raw, "cfg", _key(cls))
    assert str(info.value).startswith(expected), str(info.value)


def test_reading_converts_yaml_switches_ints_and_an_optional_seed() -> None:
    """YAML's on/off booleans mean the words; an int is a float; sampler.seed may be null."""
    training = read_section(
        TrainingConfig, {"mixed_precision": True, "xla": False}, "c", "training"
    )
    assert (training.mixed_precision, training.xla) == ("on", "off")
    assert (
        read_section(WorkerConfig, {"max_memory_growth": 1}, "c", "worker").max_memory_growth == 1.0
    )
    assert read_section(SamplerConfig, {"seed": None}, "c", "sampler").seed is None
    assert read_section(DataConfig, None, "c", "data") == DataConfig()
