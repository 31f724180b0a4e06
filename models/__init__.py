"""Backbone registry, classifier head and model builder.

Importing this package does not import Keras; `models.builder` does.
"""

from __future__ import annotations

from models.config import Augmentation, TrialConfig
from models.errors import ModelError, UnknownBackboneError, WeightsError
from models.registry import Backbone, backbone_names, get_backbone, list_backbones

__all__ = [
    "Augmentation",
    "Backbone",
    "ModelError",
    "TrialConfig",
    "UnknownBackboneError",
    "WeightsError",
    "backbone_names",
    "build_model",
    "get_backbone",
    "list_backbones",
]


def build_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - thin lazy alias
    """`models.builder.build_model`, imported on first use (it imports Keras)."""
    from models.builder import build_model as _build_model

    return _build_model(*args, **kwargs)
