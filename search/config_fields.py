"""The sections of a study config: one frozen dataclass each, validating its own values.

`read_section` turns a section's raw mapping into its dataclass, refusing unknown keys and
values of the wrong type; each section's `validate(source)` then checks its values.
`search.config.StudyConfig` reads every section, validates them in the order of the file
and adds the checks that span sections. Every error is one line naming the key and what is
allowed.
"""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, get_type_hints

from data.near_dup import DEFAULT_NEAR_THRESHOLD, MAX_NEAR_THRESHOLD
from data.split import DEDUP_POLICIES, POLICIES
from models.trial_config import Augmentation
from search.config_objective import (  # noqa: F401 - re-exported
    METRICS,
    MONITORS,
    ObjectiveConfig,
    bad,
    check_choice,
)
from search.errors import ConfigError

SAMPLERS = ("tpe", "random", "gp", "nsga2")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
CLASS_WEIGHTS = ("none", "balanced")
LR_SCHEDULES = ("cosine", "constant")
PRECISION = ("auto", "on", "off")

# Keys whose values are words such as on/off: YAML reads a bare on, off, yes or no as a
# boolean, which means the same word here.
SWITCHES = frozenset({"mixed_precision", "xla"})


@dataclass(frozen=True)
class DataConfig:
    path: str = "demo-data"
    split: str = "official"
    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    image_size: int = 224
    dedup: str = "near"
    near_threshold: int = DEFAULT_NEAR_THRESHOLD  # bits; measured by bench/near_dup.py

    def validate(self, source: str) -> None:
        """Raises ConfigError for the first bad value, naming ``data.<key>``."""
        check_choice(self.split, POLICIES, source, "data.split", "policy")
        check_choice(self.dedup, DEDUP_POLICIES, source, "data.dedup", "policy")
        if not 0 <= self.near_threshold <= MAX_NEAR_THRESHOLD:
            raise bad(
                source,
                "data.near_threshold",
                f"must be between 0 and {MAX_NEAR_THRESHOLD} bits, got {self.near_threshold}",
            )
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 < value < 1.0:
                raise bad(source, f"data.{key}", f"must be between 0 and 1, got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise bad(source, "data", "val_fraction + test_fraction must be below 1")
        if not 16 <= self.image_size <= 1024:
            raise bad(
                source,
                "data.image_size",
                f"must be between 16 and 1024 pixels, got {self.image_size}",
            )


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 10
    early_stopping_patience: int = 3
    class_weights: str = "none"
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 0
    feature_cache: bool = True
    mixed_precision: str = "auto"
    xla: str = "auto"
    lr_schedule: str = "cosine"

    def validate(self, source: str) -> None:
        """Raises ConfigError for the first bad value, naming ``training.<key>``."""
        if self.epochs < 1:
            raise bad(source, "training.epochs", f"must be at least 1, got {self.epochs}")
        if self.early_stopping_patience < 0:
            raise bad(
                source,
                "training.early_stopping_patience",
                f"must not be negative, got {self.early_stopping_patience}",
            )
        check_choice(self.class_weights, CLASS_WEIGHTS, source, "training.class_weights", "value")
        check_choice(self.lr_schedule, LR_SCHEDULES, source, "training.lr_schedule", "value")
        for key in ("mixed_precision", "xla"):
            check_choice(getattr(self, key), PRECISION, source, f"training.{key}", "value")
        for key in ("rotation", "zoom", "translation", "contrast"):
            value = getattr(self.augmentation, key)
            if not 0.0 <= value < 1.0:
                raise bad(source, f"training.augmentation.{key}", f"must be in [0, 1), got {value}")


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"
    seed: int | None = 0
    n_startup_trials: int = 10

    def validate(self, source: str) -> None:
        """Raises ConfigError for the first bad value, naming ``sampler.<key>``; the 'gp'
        sampler also needs its optional dependencies installed."""
        check_choice(self.name, SAMPLERS, source, "sampler.name", "sampler")
        if self.name == "gp":
            missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
            if missing:
                raise bad(
                    source,
                    "sampler.name",
                    f"the 'gp' sampler needs {' and '.join(missing)}: pip install "
                    "'tumor-search[gp]' (or -e '.[gp]' in a checkout); or use 'tpe' or 'random'",
                )
        if self.n_startup_trials < 0:
            raise bad(source, "sampler.n_startup_trials", "must not be negative")


@dataclass(frozen=True)
class PrunerConfig:
    name: str = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 2
    min_resource: int = 1
    reduction_factor: int = 3

    def validate(self, source: str) -> None:
        """Raises ConfigError for the first bad value, naming ``pruner.<key>``."""
        check_choice(self.name, PRUNERS, source, "pruner.name", "pruner")
        if self.reduction_factor < 2:
            raise bad(source, "pruner.reduction_factor", "must be at least 2")


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: int = 20
    grace_period: int = 60
    max_retry: int = 3

    def validate(self, source: str) -> None:
        """Raises ConfigError unless interval >= 1 and grace_period > interval."""
        if self.interval < 1 or self.grace_period <= self.interval:
            raise bad(
                source, "heartbeat", "interval must be at least 1 and grace_period above interval"
            )


@dataclass(frozen=True)
class WorkerConfig:
    """How workers behave.

    Attributes:
        max_memory_growth: A worker restarts its own process (same PID, same arguments)
            before its resident memory would exceed that after its first trial by more than
            this fraction: Keras with TensorFlow keeps tens of MB per trained model however
            the session is cleared. 0 turns restarts off.
    """

    max_memory_growth: float = 0.08

    def validate(self, source: str) -> None:
        """Raises ConfigError for a negative (or NaN) ``worker.max_memory_growth``."""
        # Written as "not >=" so that NaN is refused too.
        if not self.max_memory_growth >= 0.0:
            raise bad(
                source, "worker.max_memory_growth", "must not be negative (0 turns restarts off)"
            )


def no_unknown(raw: dict, allowed: Collection[str], source: str, prefix: str) -> None:
    """Refuse the first (sorted) key of `raw` outside `allowed`, listing the allowed keys.

    Raises:
        ConfigError: ``unknown key <prefix><key>; allowed keys: ...``.
    """
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]}; allowed keys: {', '.join(sorted(allowed))}"
        )


def typed(value: Any, kind: type, source: str, key: str, optional: bool = False) -> Any:
    """`value` if it is a `kind` (an int is a float too; a bool is no number).

    Raises:
        ConfigError: ``<key>: expected <kind>, got <value>``.
    """
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{source}: {key}: expected {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{source}: {key}: expected {kind.__name__}, got {value!r}")
    return value


@cache
def _kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """Each field's type and whether it may be None, from the dataclass's annotations."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        args = hint.__args__ if isinstance(hint, types.UnionType) else (hint,)
        kinds = [a for a in args if a is not type(None)]
        out[name] = (kinds[0], len(kinds) < len(args))
    return out


def read_section(cls: type, raw: Any, source: str, key: str) -> Any:
    """Type a section's raw mapping into `cls` (None: the defaults); values stay unchecked.

    Raises:
        ConfigError: not a mapping, an unknown key, or a value of the wrong type.
    """
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {key} must be a mapping, got {type(raw).__name__}")
    no_unknown(raw, {f.name for f in fields(cls)}, source, f"{key}.")
    kinds = _kinds(cls)
    values = {}
    for name, value in raw.items():
        kind, optional = kinds[name]
        if name in SWITCHES and isinstance(value, bool):
            value = "on" if value else "off"
        values[name] = typed(value, kind, source, f"{key}.{name}", optional=optional)
    return cls(**values)
