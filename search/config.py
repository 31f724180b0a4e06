"""Study configs: YAML files validated into frozen dataclasses.

A config names the data and its split, the training recipe, the weights policy, the search
space, the sampler, the pruner, the objective and the trial budget. `search/configs/demo.yaml`
and `search/configs/kaggle.yaml` ship with the project; any path works too. The whole config
is stored in the study's user attributes, so workers need only the study name and storage.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from data.split import DEDUP_POLICIES, POLICIES
from models.config import Augmentation
from models.errors import WeightsError
from models.registry import get_backbone
from models.weights import WeightsPolicy, parse_weights
from search.errors import ConfigError
from search.space import SearchSpace

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BUILTIN_CONFIGS = ("demo", "kaggle")

SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
CLASS_WEIGHTS = ("none", "balanced")
PRECISION = ("auto", "on", "off")


@dataclass(frozen=True)
class DataConfig:
    path: str = "demo-data"
    split: str = "official"
    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    image_size: int = 224
    dedup: str = "exact"


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


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"
    seed: int | None = 0
    n_startup_trials: int = 10


@dataclass(frozen=True)
class PrunerConfig:
    name: str = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 2
    min_resource: int = 1
    reduction_factor: int = 3


@dataclass(frozen=True)
class ObjectiveConfig:
    metric: str = "val_accuracy"

    @property
    def direction(self) -> str:
        return METRICS[self.metric]


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: int = 20
    grace_period: int = 60
    max_retry: int = 3


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

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that `from_dict` reads back (and YAML or JSON can hold)."""
        out = {
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
        }
        return out

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
        top = {
            "name",
            "trials",
            "timeout",
            "weights",
            "data",
            "training",
            "space",
            "sampler",
            "pruner",
            "objective",
            "heartbeat",
            "worker",
        }
        _no_unknown(raw, top, source, "")
        if "space" not in raw:
            raise ConfigError(f"{source}: the section 'space' is required")
        data = _section(DataConfig, raw.get("data"), source, "data")
        if not isinstance(raw.get("training") or {}, dict):
            raise ConfigError(
                f"{source}: training must be a mapping, got {type(raw['training']).__name__}"
            )
        training_raw = dict(raw.get("training") or {})
        aug_raw = training_raw.pop("augmentation", None)
        if aug_raw in (None, False, "none"):
            augmentation = Augmentation()
        else:
            augmentation = _section(Augmentation, aug_raw, source, "training.augmentation")
        training = _section(TrainingConfig, training_raw, source, "training")
        training = TrainingConfig(**{**asdict(training), "augmentation": augmentation})
        config = cls(
            name=_typed(raw.get("name", "study"), str, source, "name"),
            data=data,
            training=training,
            weights=str(raw.get("weights", "imagenet")),
            space=_parse_space(raw["space"], source),
            sampler=_section(SamplerConfig, raw.get("sampler"), source, "sampler"),
            pruner=_section(PrunerConfig, raw.get("pruner"), source, "pruner"),
            objective=_section(ObjectiveConfig, raw.get("objective"), source, "objective"),
            heartbeat=_section(HeartbeatConfig, raw.get("heartbeat"), source, "heartbeat"),
            worker=_section(WorkerConfig, raw.get("worker"), source, "worker"),
            trials=_typed(raw.get("trials", 20), int, source, "trials"),
            timeout=_typed(raw.get("timeout"), float, source, "timeout", optional=True),
        )
        config._validate(source)
        return config

    def _validate(self, source: str) -> None:
        def bad(key: str, message: str) -> ConfigError:
            return ConfigError(f"{source}: {key}: {message}")

        d, t = self.data, self.training
        if d.split not in POLICIES:
            raise bad("data.split", f"unknown policy {d.split!r}; allowed: {', '.join(POLICIES)}")
        if d.dedup not in DEDUP_POLICIES:
            raise bad(
                "data.dedup", f"unknown policy {d.dedup!r}; allowed: {', '.join(DEDUP_POLICIES)}"
            )
        for key, value in (("val_fraction", d.val_fraction), ("test_fraction", d.test_fraction)):
            if not 0.0 < value < 1.0:
                raise bad(f"data.{key}", f"must be between 0 and 1, got {value}")
        if d.val_fraction + d.test_fraction >= 1.0:
            raise bad("data", "val_fraction + test_fraction must be below 1")
        if not 16 <= d.image_size <= 1024:
            raise bad("data.image_size", f"must be between 16 and 1024 pixels, got {d.image_size}")
        if t.epochs < 1:
            raise bad("training.epochs", f"must be at least 1, got {t.epochs}")
        if t.early_stopping_patience < 0:
            raise bad(
                "training.early_stopping_patience",
                f"must not be negative, got {t.early_stopping_patience}",
            )
        if t.class_weights not in CLASS_WEIGHTS:
            raise bad(
                "training.class_weights",
                f"unknown value {t.class_weights!r}; allowed: {', '.join(CLASS_WEIGHTS)}",
            )
        for key in ("mixed_precision", "xla"):
            if getattr(t, key) not in PRECISION:
                raise bad(
                    f"training.{key}",
                    f"unknown value {getattr(t, key)!r}; allowed: {', '.join(PRECISION)}",
                )
        a = t.augmentation
        for key in ("rotation", "zoom", "translation", "contrast"):
            if not 0.0 <= getattr(a, key) < 1.0:
                raise bad(
                    f"training.augmentation.{key}", f"must be in [0, 1), got {getattr(a, key)}"
                )
        if self.sampler.name not in SAMPLERS:
            raise bad(
                "sampler.name",
                f"unknown sampler {self.sampler.name!r}; allowed: {', '.join(SAMPLERS)}",
            )
        if self.sampler.name == "gp":
            missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
            if missing:
                raise bad(
                    "sampler.name",
                    f"the 'gp' sampler needs {' and '.join(missing)}: pip install "
                    "'tumor-search[gp]' (or -e '.[gp]' in a checkout); or use 'tpe' or 'random'",
                )
        if self.sampler.n_startup_trials < 0:
            raise bad("sampler.n_startup_trials", "must not be negative")
        if self.pruner.name not in PRUNERS:
            raise bad(
                "pruner.name", f"unknown pruner {self.pruner.name!r}; allowed: {', '.join(PRUNERS)}"
            )
        if self.pruner.reduction_factor < 2:
            raise bad("pruner.reduction_factor", "must be at least 2")
        if self.objective.metric not in METRICS:
            raise bad(
                "objective.metric",
                f"unknown metric {self.objective.metric!r}; allowed: {', '.join(METRICS)}",
            )
        if self.trials < 1:
            raise bad("trials", f"must be at least 1, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise bad("timeout", f"must be positive, got {self.timeout}")
        if not self.worker.max_memory_growth >= 0.0:
            raise bad("worker.max_memory_growth", "must not be negative (0 turns restarts off)")
        hb = self.heartbeat
        if hb.interval < 1 or hb.grace_period <= hb.interval:
            raise bad("heartbeat", "interval must be at least 1 and grace_period above interval")
        for name in self.space.backbones:
            record = get_backbone(name)
            if d.image_size < record.min_size:
                raise bad(
                    "data.image_size",
                    f"{d.image_size}px is below {name}'s minimum input size of {record.min_size}px",
                )
        kind = self.weights_kind
        if kind == "file" and not (self.weights.endswith(".h5") or self.weights.endswith(".hdf5")):
            raise bad(
                "weights",
                f"must be 'imagenet', 'none' or a path to a .weights.h5 or .h5 file, got {self.weights!r}",
            )
        fine_tune = self.space.get("fine_tune")
        if kind == "none" and (fine_tune is None or 0.0 in fine_tune.extremes()):
            raise bad(
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
            config = _replace(config, data=_replace(config.data, path=str(data_path)))
        return _replace(config, **{k: v for k, v in changes.items() if v is not None})


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


def _parse_space(raw: Any, source: str) -> SearchSpace:
    try:
        return SearchSpace.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _no_unknown(raw: dict, allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]}; allowed keys: {', '.join(sorted(allowed))}"
        )


def _typed(value: Any, kind: type, source: str, key: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{source}: {key}: expected {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{source}: {key}: expected {kind.__name__}, got {value!r}")
    return value


# Keys whose values are words such as on/off: YAML reads a bare on, off, yes or no as a
# boolean, which means the same word here.
_SWITCHES = {"mixed_precision", "xla"}


def _section(cls: type, raw: Any, source: str, key: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {key} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    _no_unknown(raw, set(known), source, f"{key}.")
    values = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        kind: type = type(default) if default is not None else (int if name == "seed" else float)
        if name in ("path", "weights"):
            kind = str
        if name in _SWITCHES and isinstance(value, bool):
            value = "on" if value else "off"
        optional = default is None or (cls is SamplerConfig and name == "seed")
        values[name] = _typed(value, kind, source, f"{key}.{name}", optional=optional)
    return cls(**values)


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
            f"config not found: {name_or_path} (use {' or '.join(BUILTIN_CONFIGS)}, or a path to a YAML file)"
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
