"""Errors of the predictor: each one means bad input, and its message is one line."""

from __future__ import annotations


class PredictError(Exception):
    """Bad input: the command line prints the message as one line and exits with code 2."""


class ImageError(PredictError, ValueError):
    """A file that is not a readable image, or no readable image at all."""


class ModelFileError(PredictError):
    """A model file that is missing or is not an ONNX classifier exported by tumor-search."""
