"""The backbone registry: one record per backbone, in the style of timm and keras applications.

A backbone is registered next to its factory, with keyword fields: `register` takes a
`Backbone` record (`models.applications` declares the Keras applications so) and the
`register_backbone` decorator turns a factory function into one (`models.small_cnn`).
Every factory has one signature, ``factory(input_size, weights) -> keras.Model``, and
imports Keras only when called, so importing this module (listing backbones, validating
configs) never imports Keras. `models/__init__.py` imports the declaring modules, whose
import order is the registry order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.errors import ModelError, UnknownBackboneError

# In-graph preprocessing modes, each equal to a `keras.applications` module's preprocess_input:
#   "tf":    x / 127.5 - 1                       (MobileNet, MobileNetV2, Xception, InceptionV3, ResNetV2)
#   "torch": (x / 255 - ImageNet mean) / std     (DenseNet)
#   "none":  raw 0-255 pixels; the model normalises inside (EfficientNet(V2), MobileNetV3, ConvNeXt)
#   "unit":  x / 255                             (small_cnn, ours)
PREPROCESSING_MODES = ("tf", "torch", "none", "unit")

# The keys of `Backbone.to_dict`, in order: `backbones --json` and the feature cache key.
RECORD_KEYS = (
    "name",
    "family",
    "constructor",
    "module",
    "preprocessing",
    "default_size",
    "min_size",
    "feature_dim",
    "imagenet_file",
    "cuts",
)

# The backbone's own output: its last block, globally pooled (every backbone has it).
TOP = "top"


class BackboneFactory(Protocol):
    """What every backbone's factory is: a named callable with one signature.

    Called as ``factory(input_size, weights)`` with `weights` ``"imagenet"`` or ``None``,
    it returns a Keras model of preprocessed pixels (``input_size`` square, RGB) to
    globally average-pooled features, like ``keras.applications.X(include_top=False,
    pooling="avg")``; it raises (as Keras does) when the weights cannot be had.
    """

    __name__: str

    def __call__(self, input_size: int, weights: str | None) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class Backbone:
    """One backbone.

    Attributes:
        name: Registry name used in configs (``mobilenet_v3_small``).
        family: Model family (``mobilenet``, ``efficientnet``, ...).
        factory: Builds the backbone (see `BackboneFactory`); its name is `constructor`.
        module: `keras.applications` submodule whose ``preprocess_input`` the in-graph
            preprocessing reproduces (``None`` for our own networks).
        preprocessing: One of `PREPROCESSING_MODES`.
        default_size: Input side the backbone was designed (and pretrained) for.
        min_size: Smallest input side the factory accepts.
        feature_dim: Width of the globally pooled features.
        imagenet_file: File name Keras looks for under ``$KERAS_HOME/models`` for
            ``weights: imagenet`` at the default size (``{size}`` is filled in where the file
            depends on the input size).
        imagenet_sizes: The input sides with their own ImageNet file (where `imagenet_file`
            has ``{size}``); other sizes load the default size's file.
        cuts: Earlier places to take features from, besides `TOP`: ``(name, layer,
            channels)``, where the features are the globally pooled input of `layer` (a
            single tensor between two blocks). The network is cut there: the layers after
            it are not part of the model. ImageNet's last blocks are the most specific to
            ImageNet's classes; on other images an earlier block's features can serve better
            (see the README's real-data figures).
    """

    name: str
    family: str
    factory: BackboneFactory = field(repr=False)
    module: str | None
    preprocessing: str
    default_size: int
    min_size: int
    feature_dim: int
    imagenet_file: str | None
    imagenet_sizes: tuple[int, ...] = (96, 128, 160, 192, 224)
    cuts: tuple[tuple[str, str, int], ...] = ()

    @property
    def constructor(self) -> str:
        """Name of the factory: the `keras.applications` function, or ours (``small_cnn``)."""
        return self.factory.__name__

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (without the factory)."""
        return {key: getattr(self, key) for key in RECORD_KEYS}

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Where features may be taken: `TOP`, then the names of `cuts`."""
        return (TOP, *(name for name, _, _ in self.cuts))

    def cut(self, name: str) -> tuple[str, int] | None:
        """The layer whose input is the cut `name`, and its channels; None for `TOP`.

        Raises:
            ModelError: the backbone has no such cut.
        """
        if name == TOP:
            return None
        for cut_name, layer, channels in self.cuts:
            if cut_name == name:
                return layer, channels
        raise ModelError(
            f"backbone {self.name} has no feature layer {name!r}; "
            f"its feature layers: {', '.join(self.feature_layers)}"
        )

    def feature_dim_at(self, name: str) -> int:
        """Width of the pooled features taken at `name` (`TOP` or a cut)."""
        cut = self.cut(name)
        return self.feature_dim if cut is None else cut[1]

    def imagenet_filename(self, size: int) -> str | None:
        """The weights file Keras needs for ``weights: imagenet`` at input side `size`."""
        if self.imagenet_file is None:
            return None
        if "{size}" not in self.imagenet_file:
            return self.imagenet_file
        return self.imagenet_file.format(size=size if size in self.imagenet_sizes else 224)


REGISTRY: dict[str, Backbone] = {}


def register(record: Backbone) -> Backbone:
    """Add `record` to the registry (after those registered before it).

    Raises:
        ValueError: a backbone of that name is already registered, or the record is
            inconsistent.
    """
    if record.name in REGISTRY:
        raise ValueError(f"backbone {record.name!r} is already registered")
    if record.preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"backbone {record.name!r}: preprocessing {record.preprocessing!r} is not one of "
            f"{', '.join(PREPROCESSING_MODES)}"
        )
    if not 0 < record.min_size <= record.default_size or record.feature_dim <= 0:
        raise ValueError(f"backbone {record.name!r}: sizes or feature width out of range")
    names = [name for name, _, _ in record.cuts]
    if TOP in names or len(set(names)) != len(names) or any(c <= 0 for _, _, c in record.cuts):
        raise ValueError(
            f"backbone {record.name!r}: cuts repeat a name, use {TOP!r} or lack channels"
        )
    REGISTRY[record.name] = record
    return record


def register_backbone(**fields: Any) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register the decorated factory as a backbone with the `Backbone` keyword `fields`.

    Example::

        @register_backbone(name="small_cnn", family="small_cnn", module=None, ...)
        def small_cnn(input_size: int, weights: str | None) -> keras.Model: ...
    """

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        register(Backbone(factory=factory, **fields))
        return factory

    return decorate


def list_backbones() -> list[Backbone]:
    """Every registered backbone, in registry order."""
    return list(REGISTRY.values())


def backbone_names() -> list[str]:
    """The names of every registered backbone, in registry order."""
    return list(REGISTRY)


def get_backbone(name: str) -> Backbone:
    """The record for `name`.

    Raises:
        UnknownBackboneError: `name` is not registered; the message lists the valid names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(backbone_names())}"
        ) from None
