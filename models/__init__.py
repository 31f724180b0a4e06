"""Backbone registry, classifier head and model builder.

Importing this package registers every backbone (importing the modules that declare them,
in registry order) but does not import Keras; `models.builder` does, when it builds.
"""

from __future__ import annotations

import importlib

from models.errors import ModelError, UnknownBackboneError, WeightsError
from models.registry import Backbone, backbone_names, get_backbone, list_backbones
from models.trial_config import Augmentation, TrialConfig

# The modules that register backbones; their order is the registry order (ours first).
BACKBONE_MODULES = ("models.small_cnn", "models.applications")
for _module in BACKBONE_MODULES:
    importlib.import_module(_module)

__all__ = [
    "Augmentation",
    "Backbone",
    "ModelError",
    "TrialConfig",
    "UnknownBackboneError",
    "WeightsError",
    "backbone_names",
    "create_model",
    "get_backbone",
    "list_backbones",
]


def create_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - thin lazy alias
    """`models.builder.create_model`, imported on first use (it imports Keras)."""
    from models.builder import create_model as _create_model

    return _create_model(*args, **kwargs)
