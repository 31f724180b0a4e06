"""Study configs: YAML files validated into frozen pydantic models.

A config names the data and its split, the training recipe, the weights policy, the search
space, the sampler, the pruner, the objective and the trial budget. `search/configs/demo.yaml`
and `search/configs/kaggle.yaml` ship with the project; any path works too. The whole config
is stored in the study's user attributes, so workers need only the study name and storage.
Each section is a model of `search.config_fields` that checks its own values; this module
holds them and adds the checks that span sections. Every error is one `ConfigError` line
naming the key (see `search.config_base`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.errors import WeightsError
from models.registry import get_backbone
from models.weights import WeightsPolicy, parse_weights
from search.config_base import Says, Section, config_error, refuse
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
from search.space import SearchSpace, check_enqueued


class StorageConfig(Section):
    """How workers ride out a storage outage (see `search.runtime.outage`).

    Attributes:
        retry_seconds: Retry connection errors this long before a worker gives up with
            exit 75 (0: never retry); ``--storage-retry`` overrides it.
    """

    retry_seconds: Annotated[
        float,
        Field(ge=0.0, allow_inf_nan=False),
        Says("must be finite, not negative (0: no retry)"),
    ] = 120.0


CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BUILTIN_CONFIGS = ("demo", "demo-pareto", "kaggle")


def _read_space(raw: Any) -> SearchSpace:
    try:
        return SearchSpace.from_dict(raw)
    except ConfigError as exc:
        raise refuse(str(exc), key="", read=True) from None


def _read_enqueue(raw: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(raw, tuple):
        return raw  # already read (a copy of a validated config)
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise refuse("must be a list of mappings of parameter names to values", read=True)
    return tuple(dict(entry) for entry in raw)


# The sections in the order a config is read (each one's shape: a mapping, known keys,
# types), then in the order their values are checked; "" is the config itself. Where a
# config has several errors these pick the one reported (`search.config_base`).
READ_ORDER = (
    "",
    "data",
    "training.augmentation",
    "training",
    "name",
    "space",
    "enqueue",
    "sampler",
    "pruner",
    "objective",
    "heartbeat",
    "worker",
    "storage",
    "trials",
    "timeout",
)
CHECK_ORDER = (
    "data",
    "training",
    "training.augmentation",
    "sampler",
    "pruner",
    "objective",
    "trials",
    "timeout",
    "worker",
    "storage",
    "heartbeat",
    "",
)
SECTIONS = ("data", "training", "sampler", "pruner", "objective", "heartbeat", "worker", "storage")


class StudyConfig(Section):
    """A whole study config (see the module docstring)."""

    name: str = "study"
    trials: Annotated[int, Field(ge=1), Says("must be at least 1, got {value}")] = 20
    timeout: Annotated[float | None, Field(gt=0.0), Says("must be positive, got {value}")] = None
    weights: Annotated[str, BeforeValidator(str)] = "imagenet"
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    space: Annotated[
        SearchSpace, PlainValidator(_read_space), PlainSerializer(lambda s: s.to_yaml())
    ]
    # Configurations the study runs first, before the sampler's own (Optuna's enqueue_trial):
    # each a mapping of space parameters to values; those left out are sampled.
    enqueue: Annotated[tuple[dict[str, Any], ...], PlainValidator(_read_enqueue)] = ()
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that `from_dict` reads back (and YAML or JSON can hold)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, raw: Any, source: str = "config") -> StudyConfig:
        """Validate a mapping.

        Raises:
            ConfigError: the message names the bad key and what is allowed.
        """
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise config_error(
                exc, raw, source, cls, read_order=READ_ORDER, check_order=CHECK_ORDER
            ) from None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        """An absent or null section is the default one (and so is an empty or false
        ``training``); a multi-objective study without a pruner section prunes nothing
        (Optuna cannot prune several objectives) rather than taking the median pruner."""
        if not isinstance(raw, dict):
            return raw
        out = {k: v for k, v in raw.items() if not (k in SECTIONS and v is None)}
        if "training" in out and not out["training"]:
            del out["training"]
        objective = out.get("objective")
        if isinstance(objective, dict) and objective.get("metrics") is not None:
            out.setdefault("pruner", {"name": "none"})
        return out

    @field_validator("objective")
    @classmethod
    def _one_objective_prunes(cls, objective: ObjectiveConfig, info: ValidationInfo) -> Any:
        pruner = info.data.get("pruner")
        if objective.is_multi and pruner is not None and pruner.name != "none":
            raise refuse(
                "a multi-objective study cannot prune (Optuna's trial.report raises for several "
                "objectives): remove the pruner section or set pruner.name: none",
                key="pruner",
            )
        return objective

    @model_validator(mode="after")
    def _across_sections(self) -> StudyConfig:
        """Each backbone takes the image size; a weights path names an .h5 file; random
        weights need a backbone that trains."""
        for name in self.space.backbones:
            record = get_backbone(name)
            if self.data.image_size < record.min_size:
                raise refuse(
                    f"{self.data.image_size}px is below {name}'s minimum input size of "
                    f"{record.min_size}px",
                    key="data.image_size",
                )
        kind = self.weights_kind
        if kind == "file" and not (self.weights.endswith(".h5") or self.weights.endswith(".hdf5")):
            raise refuse(
                "must be 'imagenet', 'none' or a path to a .weights.h5 or .h5 file, "
                f"got {self.weights!r}",
                key="weights",
            )
        try:
            check_enqueued(self.enqueue, self.space)
        except ConfigError as exc:
            raise refuse(str(exc), key="") from None
        fine_tune = self.space.get("fine_tune")
        if kind == "none" and (fine_tune is None or 0.0 in fine_tune.extremes()):
            raise refuse(
                "with weights 'none' the backbone must train (fine_tune above 0, e.g. [1.0]): "
                "a frozen random backbone gives constant features",
                key="space.fine_tune",
            )
        return self

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
        """A copy with top-level fields or ``data_path`` replaced (not validated again)."""
        data_path = changes.pop("data_path", None)
        update = {k: v for k, v in changes.items() if v is not None}
        if data_path is not None:
            update["data"] = self.data.model_copy(update={"path": str(data_path)})
        return self.model_copy(update=update)


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
