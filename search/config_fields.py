"""The sections of a study config: one strict, frozen pydantic model each.

Each section refuses unknown keys and values of the wrong type and checks its own values
(see `search.config_base`); `search.config.StudyConfig` holds them and adds the checks
that span sections. Every error is one line naming the key and what is allowed.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from data.errors import DataError
from data.groups import compile_pattern
from data.medical import AXES, DICOM_WINDOWS, MedicalSettings
from data.near_dup import DEFAULT_NEAR_THRESHOLD, MAX_NEAR_THRESHOLD
from data.split import DEDUP_POLICIES, POLICIES
from models.trial_config import Augmentation
from search.config_base import ReadAs, Says, Section, one_of, refuse
from search.config_objective import ObjectiveConfig

__all__ = ["ObjectiveConfig"]  # the objective section has its own module

SAMPLERS = ("tpe", "random", "gp", "nsga2")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
CLASS_WEIGHTS = ("none", "balanced")
LR_SCHEDULES = ("cosine", "constant")
PRECISION = ("auto", "on", "off")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0), Says("must be between 0 and 1, got {value}")]
Amount = Annotated[float, Field(ge=0.0, lt=1.0), Says("must be in [0, 1), got {value}")]


def _switch(value: Any) -> Any:
    """YAML reads a bare on, off, yes or no as a boolean, which means the same word here."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


Switch = Annotated[str, BeforeValidator(_switch), one_of(PRECISION, "value")]


def _pair(value: Any) -> Any:
    """YAML's [low, high] as the tuple of numbers the field holds."""
    numbers = isinstance(value, list) and len(value) == 2
    if numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return (float(value[0]), float(value[1]))
    return value


class DataConfig(Section):
    path: str = "demo-data"
    split: Annotated[str, one_of(POLICIES, "policy")] = "official"
    seed: int = 42
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15
    image_size: Annotated[
        int, Field(ge=16, le=1024), Says("must be between 16 and 1024 pixels, got {value}")
    ] = 224
    dedup: Annotated[str, one_of(DEDUP_POLICIES, "policy")] = "near"
    near_threshold: Annotated[
        int,
        Field(ge=0, le=MAX_NEAR_THRESHOLD),
        Says(f"must be between 0 and {MAX_NEAR_THRESHOLD} bits, got {{value}}"),
    ] = DEFAULT_NEAR_THRESHOLD  # bits; measured by bench/near_dup.py
    # Patient groups (`data.groups`): a CSV of path,group (relative: in the data folder), or
    # a regex whose first capture group in each relative path is the group.
    groups: str | None = None
    group_pattern: str | None = None
    # DICOM and NIfTI slices (`data.medical`): the DICOM window, and how volumes are sliced.
    dicom_window: Annotated[str, one_of(DICOM_WINDOWS, "window")] = "file"
    volume_axis: Annotated[str, one_of(tuple(AXES), "axis")] = "axial"
    volume_range: Annotated[
        tuple[float, float],
        BeforeValidator(_pair),
        Says("must be two fractions [low, high] of the axis, got {value}"),
    ] = (0.0, 1.0)
    volume_min_intensity: Amount = 0.05

    def medical(self) -> MedicalSettings:
        """The settings `data.discovery.scan` reads DICOM and NIfTI files with."""
        return MedicalSettings(
            self.dicom_window, self.volume_axis, self.volume_range, self.volume_min_intensity
        )

    @model_validator(mode="after")
    def _room_for_training(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise refuse("val_fraction + test_fraction must be below 1")
        low, high = self.volume_range
        if not 0.0 <= low < high <= 1.0:
            raise refuse(
                f"must be fractions of the axis, 0 <= low < high <= 1, got {low}, {high}",
                key="data.volume_range",
            )
        if self.groups is not None and self.group_pattern is not None:
            raise refuse("give groups (a CSV file) or group_pattern (a regex), not both")
        if self.group_pattern is not None:
            try:
                compile_pattern(self.group_pattern)
            except DataError as exc:
                raise refuse(str(exc), key="data.group_pattern") from None
        return self


class AugmentationConfig(Section):
    """`models.trial_config.Augmentation` as the config reads it: each amount in [0, 1)."""

    flip: bool = False
    rotation: Amount = 0.0
    zoom: Amount = 0.0
    translation: Amount = 0.0
    contrast: Amount = 0.0


class TrainingConfig(Section):
    epochs: Annotated[int, Field(ge=1), Says("must be at least 1, got {value}")] = 10
    early_stopping_patience: Annotated[
        int, Field(ge=0), Says("must not be negative, got {value}")
    ] = 3
    class_weights: Annotated[str, one_of(CLASS_WEIGHTS, "value")] = "none"
    augmentation: Annotated[Augmentation, ReadAs(AugmentationConfig)] = Field(
        default_factory=Augmentation
    )
    seed: int = 0
    feature_cache: bool = True
    mixed_precision: Switch = "auto"
    xla: Switch = "auto"
    lr_schedule: Annotated[str, one_of(LR_SCHEDULES, "value")] = "cosine"
    # train-best's refit on train+val: this many epochs (trials are short proxies, the final
    # model may train longer); None: the count finalize's folds chose.
    refit_epochs: Annotated[int | None, Field(ge=1), Says("must be at least 1, got {value}")] = None

    @model_validator(mode="before")
    @classmethod
    def _no_augmentation(cls, raw: Any) -> Any:
        """``augmentation: none`` (or null, or false) is the default: none."""
        if isinstance(raw, dict) and raw.get("augmentation", None) in (None, False, "none"):
            return {k: v for k, v in raw.items() if k != "augmentation"}
        return raw


class SamplerConfig(Section):
    name: Annotated[str, one_of(SAMPLERS, "sampler")] = "tpe"
    seed: int | None = 0
    n_startup_trials: Annotated[int, Field(ge=0), Says("must not be negative")] = 10
    # TPE only: model the parameters jointly (Optuna's multivariate TPE) rather than each on
    # its own, as Optuna's TPE does by default.
    multivariate: bool = False

    @model_validator(mode="after")
    def _multivariate_is_tpe(self) -> SamplerConfig:
        if self.multivariate and self.name != "tpe":
            raise refuse(
                f"applies to the 'tpe' sampler only, not '{self.name}'",
                key="sampler.multivariate",
            )
        return self

    @field_validator("name")
    @classmethod
    def _gp_installed(cls, name: str) -> str:
        """The 'gp' sampler needs its optional dependencies installed."""
        if name == "gp":
            missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
            if missing:
                raise refuse(
                    f"the 'gp' sampler needs {' and '.join(missing)}: pip install "
                    "'tumor-search[gp]' (or -e '.[gp]' in a checkout); or use 'tpe' or 'random'"
                )
        return name


class PrunerConfig(Section):
    name: Annotated[str, one_of(PRUNERS, "pruner")] = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 2
    min_resource: int = 1
    reduction_factor: Annotated[int, Field(ge=2), Says("must be at least 2")] = 3


class HeartbeatConfig(Section):
    interval: int = 20
    grace_period: int = 60
    max_retry: int = 3

    @model_validator(mode="after")
    def _grace_above_interval(self) -> HeartbeatConfig:
        if self.interval < 1 or self.grace_period <= self.interval:
            raise refuse("interval must be at least 1 and grace_period above interval")
        return self


class WorkerConfig(Section):
    """How workers behave.

    Attributes:
        max_memory_growth: A worker restarts its own process (same PID, same arguments)
            before its resident memory would exceed that after its first trial by more than
            this fraction. A guard against what a backend may keep per trained model:
            since `models.backend.release_models` drops TensorFlow's traced graphs a worker
            stays within about 1 % over 12 trials, but one trial of a larger backbone after
            small ones can add about 100 MB (8 % of a 1.3 GB worker) once. The models a
            TensorFlow worker keeps for their traced steps (`models.step_reuse`) count too:
            past the limit they are let go first, the largest first, and the process restarts
            only if that was not enough. 0 turns restarts off.
        kept_models: Compiled models a TensorFlow worker keeps, so that a later trial of
            the same architecture trains one of them in its new model's place and state
            and traces no step again (`models.step_reuse`: 6-7 s saved a MobileNetV3Small
            trial at 64 px on 2 CPU cores, 0.7-1 s a small_cnn). Each holds its traced
            graphs: about 45 MB a small_cnn at 32 px, 340 MB a MobileNetV3Small at 64 px;
            on a GPU also its weights and optimizer slots in device memory (about 12 bytes a
            trainable parameter): lower it for large backbones near the GPU's memory. 0
            keeps none.
    """

    # NaN is refused too.
    max_memory_growth: Annotated[
        float, Field(ge=0.0), Says("must not be negative (0 turns restarts off)")
    ] = 0.25
    kept_models: Annotated[
        int, Field(ge=0, le=64), Says("must be between 0 and 64, got {value}")
    ] = 3
