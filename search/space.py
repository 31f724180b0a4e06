"""The search space: the only module that calls ``trial.suggest_*``.

A space is read from the study config's ``space`` section. Each parameter is one of:

* a list: the choices of a categorical parameter (``[small_cnn, mobilenet_v3_small]``);
* a mapping ``{low, high}`` with optional ``log`` and ``step``: an int range when both
  bounds are ints and the parameter is an integer, else a float range;
* a single value: fixed (not sampled).

`suggest(trial, space)` returns a frozen `TrialConfig`; replaying a finished trial's params
through `optuna.trial.FixedTrial` gives the same config back (that is how `export` works).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import optuna

from models.errors import ModelError
from models.registry import backbone_names, get_backbone
from models.trial_config import TrialConfig
from search.errors import ConfigError

# Parameters a space may hold: the fields of TrialConfig.
PARAMS: tuple[str, ...] = tuple(f.name for f in fields(TrialConfig))
INT_PARAMS = frozenset({"head_depth", "head_width", "batch_size"})
FLOAT_PARAMS = frozenset(
    {"dropout", "learning_rate", "weight_decay", "fine_tune", "label_smoothing"}
)
REQUIRED_PARAMS = ("backbone",)

# The seed study's two published configurations, enqueued as a new study's first trials.
SEED_CONFIGS: tuple[dict[str, Any], ...] = (
    {
        "backbone": "mobilenet",
        "head_depth": 3,
        "head_width": 128,
        "dropout": 0.3,
        "optimizer": "adam",
        "learning_rate": 1e-5,
        "fine_tune": 0.0,
    },
    {
        "backbone": "xception",
        "head_depth": 3,
        "head_width": 128,
        "dropout": 0.5,
        "optimizer": "adam",
        "learning_rate": 2e-5,
        "fine_tune": 0.0,
    },
)


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value: Any) -> bool:
        return value in self.values

    def extremes(self) -> tuple[Any, ...]:
        return self.values

    def to_yaml(self) -> Any:
        return list(self.values)


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def extremes(self) -> tuple[int, ...]:
        return (self.low, self.high)

    def to_yaml(self) -> Any:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.step != 1:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def extremes(self) -> tuple[float, ...]:
        return (self.low, self.high)

    def to_yaml(self) -> Any:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return value == self.value

    def extremes(self) -> tuple[Any, ...]:
        return (self.value,)

    def to_yaml(self) -> Any:
        return self.value


Param = Choice | IntRange | FloatRange | Fixed


@dataclass(frozen=True)
class SearchSpace:
    """Parsed ``space`` section: one `Param` per TrialConfig field that the config names."""

    params: tuple[tuple[str, Param], ...]

    def get(self, name: str) -> Param | None:
        return dict(self.params).get(name)

    @property
    def backbones(self) -> tuple[str, ...]:
        param = self.get("backbone")
        assert param is not None
        return tuple(param.extremes())

    def to_yaml(self) -> dict[str, Any]:
        return {name: param.to_yaml() for name, param in self.params}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "space") -> SearchSpace:
        """Parse and validate a ``space`` mapping.

        Raises:
            ConfigError: an unknown parameter, a malformed range, a value out of range or an
                unknown backbone; the message names the key.
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping of parameter names to choices or ranges")
        unknown = sorted(set(raw) - set(PARAMS))
        if unknown:
            raise ConfigError(
                f"unknown key {where}.{unknown[0]}; allowed keys: {', '.join(PARAMS)}"
            )
        for name in REQUIRED_PARAMS:
            if name not in raw:
                raise ConfigError(f"{where}.{name} is required (a list of backbones)")
        params = tuple(
            (name, _parse_param(name, raw[name], f"{where}.{name}"))
            for name in PARAMS
            if name in raw
        )
        space = cls(params)
        space._validate(where)
        return space

    def _validate(self, where: str) -> None:
        for name in self.backbones:
            if name not in backbone_names():
                raise ConfigError(
                    f"{where}.backbone: unknown backbone {name!r}; valid backbones: {', '.join(backbone_names())}"
                )
        layers = self.get("feature_layer")
        for layer in layers.extremes() if layers is not None else ():
            for name in self.backbones:
                if layer not in get_backbone(name).feature_layers:
                    raise ConfigError(
                        f"{where}.feature_layer: backbone {name} has no feature layer "
                        f"{layer!r}; its feature layers: "
                        f"{', '.join(get_backbone(name).feature_layers)}"
                    )
        # Every extreme value must make a valid TrialConfig (dropout 1.5, learning rate 0 ...).
        for name, param in self.params:
            for value in param.extremes():
                try:
                    TrialConfig(**{"backbone": self.backbones[0], name: value})
                except ModelError as exc:
                    raise ConfigError(f"{where}.{name}: {exc}") from None
                except TypeError as exc:
                    raise ConfigError(f"{where}.{name}: bad value {value!r} ({exc})") from None


def _parse_param(name: str, raw: Any, where: str) -> Param:
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{where}: an empty list of choices")
        if len(set(map(repr, raw))) != len(raw):
            raise ConfigError(f"{where}: repeated choices in {raw}")
        for value in raw:
            _check_type(name, value, where)
        return Fixed(raw[0]) if len(raw) == 1 else Choice(tuple(raw))
    if isinstance(raw, dict):
        allowed = {"low", "high", "log", "step"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown key {where}.{unknown[0]}; allowed keys: low, high, log, step"
            )
        if "low" not in raw or "high" not in raw:
            raise ConfigError(f"{where}: a range needs both low and high")
        if name not in INT_PARAMS | FLOAT_PARAMS:
            raise ConfigError(f"{where}: {name} takes a list of choices, not a range")
        low, high, log = raw["low"], raw["high"], bool(raw.get("log", False))
        for bound in (low, high):
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ConfigError(f"{where}: low and high must be numbers, got {bound!r}")
        if low > high:
            raise ConfigError(f"{where}: low {low} is above high {high}")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
        if name in INT_PARAMS:
            if not (isinstance(low, int) and isinstance(high, int)):
                raise ConfigError(f"{where}: {name} is an integer; low and high must be integers")
            return IntRange(low, high, int(raw.get("step", 1)), log)
        step = raw.get("step")
        return FloatRange(float(low), float(high), log, float(step) if step is not None else None)
    _check_type(name, raw, where)
    return Fixed(raw)


def _check_type(name: str, value: Any, where: str) -> None:
    if name in INT_PARAMS:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif name in FLOAT_PARAMS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif name in ("head_batchnorm", "feature_batchnorm"):
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{where}: bad value {value!r} for {name}")


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace) -> TrialConfig:
    """Sample (or replay) one configuration.

    Args:
        trial: An Optuna trial, or `optuna.trial.FixedTrial` to replay known params.
        space: The parsed search space.
    """
    values = {name: param.suggest(trial, name) for name, param in space.params}
    for name in INT_PARAMS & set(values):
        values[name] = int(values[name])
    return TrialConfig(**values)


def replay(params: dict[str, Any], space: SearchSpace) -> TrialConfig:
    """The TrialConfig that a finished trial's params stand for."""
    return suggest(optuna.trial.FixedTrial(params), space)


def check_enqueued(entries: Any, space: SearchSpace, where: str = "enqueue") -> None:
    """Each configuration to enqueue names parameters of the space with values it holds
    (parameters left out are sampled).

    Raises:
        ConfigError: not a list of mappings, an unknown parameter or a value out of range;
            the message names the entry and the key.
    """
    params = dict(space.params)
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"{at}: must be a mapping of parameter names to values")
        for name, value in entry.items():
            param = params.get(name)
            if param is None:
                raise ConfigError(
                    f"{at}.{name}: not a parameter of the space; its parameters: "
                    f"{', '.join(params)}"
                )
            _check_type(name, value, f"{at}.{name}")
            if not param.contains(value):
                raise ConfigError(
                    f"{at}.{name}: {value!r} is outside the space ({name}: {param.to_yaml()})"
                )


def seed_trials(space: SearchSpace, image_size: int) -> list[dict[str, Any]]:
    """The seed study's configurations that fit this space, as params to enqueue.

    A configuration is kept when its backbone is in the space and accepts `image_size`;
    values outside the space (a learning rate below its range, say) are left to the sampler.
    """
    out = []
    for seed in SEED_CONFIGS:
        if (
            seed["backbone"] not in space.backbones
            or image_size < get_backbone(seed["backbone"]).min_size
        ):
            continue
        params: dict[str, Any] = {}
        for name, param in space.params:
            if name in seed and not isinstance(param, Fixed) and param.contains(seed[name]):
                params[name] = seed[name]
        out.append(params)
    return out
