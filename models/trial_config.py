"""Plain frozen dataclasses that describe a model: what the builder takes, never a trial."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from models.errors import ModelError

OPTIMIZERS = ("adam", "adamw")
ACTIVATIONS = ("relu", "gelu", "swish", "elu", "tanh")


@dataclass(frozen=True)
class TrialConfig:
    """One configuration of the search space.

    Attributes:
        backbone: Registry name of the backbone.
        head_depth: Dense layers in the head (0: a linear classifier on pooled features).
        head_width: Units of each dense layer of the head.
        dropout: Dropout rate before each dense layer of the head.
        learning_rate: Optimizer learning rate.
        optimizer: ``adam`` or ``adamw``.
        weight_decay: AdamW's decoupled weight decay (ignored by Adam).
        fine_tune: Fraction of the backbone's layers, counted from the top, that train
            (0: frozen backbone; 1: the whole backbone). Batch-norm layers of pretrained
            backbones stay frozen either way.
        head_activation: Activation of the head's dense layers.
        head_batchnorm: Batch normalisation after each dense layer of the head.
        label_smoothing: Label smoothing of the cross-entropy loss.
        batch_size: Training batch size.
        feature_layer: Where the head takes its features: ``top`` (the backbone's output)
            or one of the backbone's earlier cuts (`models.registry.Backbone.cuts`); the
            model ends there.
        feature_batchnorm: Batch normalisation of the pooled features at the head's input
            (features from inside a network are not on the scale a dense layer expects).
    """

    backbone: str
    head_depth: int = 1
    head_width: int = 128
    dropout: float = 0.3
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    fine_tune: float = 0.0
    head_activation: str = "relu"
    head_batchnorm: bool = False
    label_smoothing: float = 0.0
    batch_size: int = 32
    feature_layer: str = "top"
    feature_batchnorm: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.head_depth <= 4:
            raise ModelError(f"head_depth must be 0-4, got {self.head_depth}")
        if self.head_width < 1:
            raise ModelError(f"head_width must be positive, got {self.head_width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.learning_rate > 0.0:
            raise ModelError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise ModelError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.weight_decay < 0.0:
            raise ModelError(f"weight_decay must not be negative, got {self.weight_decay}")
        if not 0.0 <= self.fine_tune <= 1.0:
            raise ModelError(f"fine_tune must be in [0, 1], got {self.fine_tune}")
        if self.head_activation not in ACTIVATIONS:
            raise ModelError(
                f"head_activation must be one of {', '.join(ACTIVATIONS)}, got {self.head_activation!r}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ModelError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.batch_size < 1:
            raise ModelError(f"batch_size must be positive, got {self.batch_size}")
        if not self.feature_layer:
            raise ModelError("feature_layer must name a layer (top, or a backbone's cut)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Rebuild from `to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelError(
                f"unknown TrialConfig key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def describe(self) -> str:
        """A short human-readable summary."""
        head = "linear" if self.head_depth == 0 else f"{self.head_depth}x{self.head_width}"
        tune = "frozen" if self.fine_tune == 0 else f"fine-tune {self.fine_tune:g}"
        return (
            f"{self.backbone} ({tune}), head {head}, dropout {self.dropout:.2f}, "
            f"{self.optimizer} lr {self.learning_rate:.2e}, batch {self.batch_size}"
        )


@dataclass(frozen=True)
class Augmentation:
    """Random augmentation layers placed in the model graph (active only in training).

    Attributes:
        flip: Random horizontal flips (left and right hemispheres mirror each other).
        rotation: Maximum rotation, as a fraction of a full turn.
        zoom: Maximum zoom in or out, as a fraction.
        translation: Maximum shift, as a fraction of the image side.
        contrast: Maximum contrast change, as a fraction.
    """

    flip: bool = False
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.flip or any(
            v > 0 for v in (self.rotation, self.zoom, self.translation, self.contrast)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
