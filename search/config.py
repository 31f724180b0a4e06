"""Study configs: YAML files validated into frozen dataclasses.

A config names the data and its split, the training recipe, the weights policy, the search
space, the sampler, the pruner, the objective and the trial budget. `search/configs/demo.yaml`
and `search/configs/kaggle.yaml` ship with the project; any path works too. The whole config
is stored in the study's user attributes, so workers need only the study name and storage.
Each section is a dataclass of `search.config_fields` that validates its own values; this
module reads them in order and adds the checks that span sections.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from models.errors import WeightsError
from models.registry import get_backbone
from models.trial_config import Augmentation
from models.weights import WeightsPolicy, parse_weights
from search.config_fields import (
    DataConfig,
    HeartbeatConfig,
    ObjectiveConfig,
    PrunerConfig,
    SamplerConfig,
    TrainingConfig,
    WorkerConfig,
    bad,
    no_unknown,
    read_section,
    typed,
)
from search.config_objective import with_primary_metric
from search.errors import ConfigError
from search.space import SearchSpace


@dataclass(frozen=True)
class StorageConfig:
    """How workers ride out a storage outage (see `search.runtime.outage`).

    Attributes:
        retry_seconds: Retry connection errors this long before a worker gives up with
            exit 75 (0: never retry); ``--storage-retry`` overrides it.
    """

    retry_seconds: float = 120.0

    def validate(self, source: str) -> None:
        """Raises ConfigError for a negative (or NaN) ``storage.retry_seconds``."""
        if not (self.retry_seconds >= 0.0 and math.isfinite(self.retry_seconds)):
            raise bad(source, "storage.retry_seconds", "must be finite, not negative (0: no retry)")


CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BUILTIN_CONFIGS = ("demo", "demo-pareto", "kaggle")


@dataclass(frozen=True)
class StudyConfig:
    """A whole study config (see the module docstring)."""

    name: str
    data: DataConfig
    training: TrainingConfig
    weights: str
    space: SearchSpace
    sampler: SamplerConfig
    pruner: PrunerConfig
    objective: ObjectiveConfig
    heartbeat: HeartbeatConfig
    trials: int
    timeout: float | None = None
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that `from_dict` reads back (and YAML or JSON can hold)."""
        return {
            "name": self.name,
            "trials": self.trials,
            "timeout": self.timeout,
            "weights": self.weights,
            "data": asdict(self.data),
            "training": asdict(self.training),
            "space": self.space.to_yaml(),
            "sampler": asdict(self.sampler),
            "pruner": asdict(self.pruner),
            "objective": asdict(self.objective),
            "heartbeat": asdict(self.heartbeat),
            "worker": asdict(self.worker),
            "storage": asdict(self.storage),
        }

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> StudyConfig:
        """Validate a mapping.

        Raises:
            ConfigError: the message names the bad key and what is allowed.
        """
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source}: the config must be a mapping of sections, got {type(raw).__name__}"
            )
        no_unknown(raw, {f.name for f in fields(cls)}, source, "")
        if "space" not in raw:
            raise ConfigError(f"{source}: the section 'space' is required")
        # Every section is typed before any value is checked: the first error stays the same.
        data = read_section(DataConfig, raw.get("data"), source, "data")
        training = _read_training(raw, source)
        config = cls(
            name=typed(raw.get("name", "study"), str, source, "name"),
            data=data,
            training=training,
            weights=str(raw.get("weights", "imagenet")),
            space=_parse_space(raw["space"], source),
            sampler=read_section(SamplerConfig, raw.get("sampler"), source, "sampler"),
            pruner=_read_pruner(raw, source),
            objective=read_section(
                ObjectiveConfig, with_primary_metric(raw.get("objective")), source, "objective"
            ),
            heartbeat=read_section(HeartbeatConfig, raw.get("heartbeat"), source, "heartbeat"),
            worker=read_section(WorkerConfig, raw.get("worker"), source, "worker"),
            storage=read_section(StorageConfig, raw.get("storage"), source, "storage"),
            trials=typed(raw.get("trials", 20), int, source, "trials"),
            timeout=typed(raw.get("timeout"), float, source, "timeout", optional=True),
        )
        config._validate(source)
        return config

    def _validate(self, source: str) -> None:
        """Each section's own checks, in the order of the file, then those across sections."""
        for section in (self.data, self.training, self.sampler, self.pruner, self.objective):
            section.validate(source)
        if self.objective.is_multi and self.pruner.name != "none":
            raise bad(
                source,
                "pruner",
                "a multi-objective study cannot prune (Optuna's trial.report raises for several "
                "objectives): remove the pruner section or set pruner.name: none",
            )
        if self.trials < 1:
            raise bad(source, "trials", f"must be at least 1, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise bad(source, "timeout", f"must be positive, got {self.timeout}")
        self.worker.validate(source)
        self.storage.validate(source)
        self.heartbeat.validate(source)
        for name in self.space.backbones:
            record = get_backbone(name)
            if self.data.image_size < record.min_size:
                raise bad(
                    source,
                    "data.image_size",
                    f"{self.data.image_size}px is below {name}'s minimum input size of "
                    f"{record.min_size}px",
                )
        self._validate_weights(source)

    def _validate_weights(self, source: str) -> None:
        """A weights path must name an .h5 file; random weights need a backbone that trains."""
        kind = self.weights_kind
        if kind == "file" and not (self.weights.endswith(".h5") or self.weights.endswith(".hdf5")):
            raise bad(
                source,
                "weights",
                "must be 'imagenet', 'none' or a path to a .weights.h5 or .h5 file, "
                f"got {self.weights!r}",
            )
        fine_tune = self.space.get("fine_tune")
        if kind == "none" and (fine_tune is None or 0.0 in fine_tune.extremes()):
            raise bad(
                source,
                "space.fine_tune",
                "with weights 'none' the backbone must train (fine_tune above 0, e.g. [1.0]): "
                "a frozen random backbone gives constant features",
            )

    @property
    def weights_kind(self) -> str:
        """``imagenet``, ``none`` or ``file`` (without touching the file)."""
        text = self.weights.strip().lower()
        if text == "imagenet":
            return "imagenet"
        return "none" if text in ("none", "null", "scratch", "") else "file"

    def weights_policy(self) -> WeightsPolicy:
        """The weights policy; a weights file must exist on this machine.

        Raises:
            ConfigError: the weights file is missing or of the wrong kind.
        """
        try:
            return parse_weights(self.weights)
        except WeightsError as exc:
            raise ConfigError(f"weights: {exc}") from None

    def with_overrides(self, **changes: Any) -> StudyConfig:
        """A copy with top-level fields or ``data_path`` replaced."""
        data_path = changes.pop("data_path", None)
        config = self
        if data_path is not None:
            config = replace(config, data=replace(config.data, path=str(data_path)))
        return replace(config, **{k: v for k, v in changes.items() if v is not None})


def _read_pruner(raw: dict, source: str) -> PrunerConfig:
    """The pruner section; a multi-objective study without one prunes nothing (Optuna
    cannot prune several objectives), rather than taking the default median pruner."""
    objective = raw.get("objective")
    multi = isinstance(objective, dict) and objective.get("metrics") is not None
    if multi and raw.get("pruner") is None:
        return PrunerConfig(name="none")
    return read_section(PrunerConfig, raw.get("pruner"), source, "pruner")


def _read_training(raw: dict, source: str) -> TrainingConfig:
    """The training section; an absent, empty or false one (or augmentation) is the default.

    Raises:
        ConfigError: not a mapping, an unknown key, or a value of the wrong type.
    """
    if not isinstance(raw.get("training") or {}, dict):
        raise ConfigError(
            f"{source}: training must be a mapping, got {type(raw['training']).__name__}"
        )
    training_raw = dict(raw.get("training") or {})
    aug_raw = training_raw.pop("augmentation", None)
    if aug_raw in (None, False, "none"):
        augmentation = Augmentation()
    else:
        augmentation = read_section(Augmentation, aug_raw, source, "training.augmentation")
    training = read_section(TrainingConfig, training_raw, source, "training")
    return replace(training, augmentation=augmentation)


def _parse_space(raw: Any, source: str) -> SearchSpace:
    try:
        return SearchSpace.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_path(name_or_path: str) -> Path:
    """`demo` and `kaggle` name the shipped configs; anything else is a file path."""
    if name_or_path in BUILTIN_CONFIGS:
        return CONFIG_DIR / f"{name_or_path}.yaml"
    return Path(name_or_path).expanduser()


def load_config(name_or_path: str) -> StudyConfig:
    """Read and validate a study config.

    Raises:
        ConfigError: missing file, YAML syntax error, or a config that does not validate.
    """
    path = config_path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"config not found: {name_or_path} (use {', '.join(BUILTIN_CONFIGS)}, or a path to a YAML file)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    return StudyConfig.from_dict(raw, source=str(path))
