"""Errors that mean a model cannot be built as asked: bad input, not a bug."""

from __future__ import annotations


class ModelError(Exception):
    """A model that cannot be built as configured."""


class UnknownBackboneError(ModelError):
    """A backbone name that is not in the registry."""


class WeightsError(ModelError):
    """Weights that cannot be loaded, or a weights policy that cannot work."""
