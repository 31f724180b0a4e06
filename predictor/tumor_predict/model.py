"""An ONNX classifier exported by tumor-search, run in onnxruntime.

What the file must hold (`train-best --format onnx` writes it so):

* one float input named ``pixels`` of shape ``[batch, H, W, 3]`` with ``H == W``: raw 0-255
  RGB pixels, NHWC (the preprocessing is inside the graph);
* an output (``class_probabilities``, else the first) whose last dimension is the number of
  classes: softmax probabilities;
* custom metadata ``producer`` = ``tumor-search``, ``class_names`` (a JSON list of strings),
  ``input_size`` (the side H, as an integer string), ``format_version`` and, optionally,
  ``temperature``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumor_predict.errors import ModelFileError

PRODUCER = "tumor-search"
INPUT_NAME = "pixels"
OUTPUT_NAME = "class_probabilities"


def _class_names(meta: dict[str, str], source: Path) -> list[str]:
    text = meta.get("class_names")
    if text is None:
        raise ModelFileError(f"{source} has no class_names metadata: not a tumor-search model")
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ModelFileError(f"{source}: class_names metadata is not a JSON list of strings")
    return names


def _input_size(meta: dict[str, str], source: Path) -> int:
    text = meta.get("input_size")
    if text is None:
        raise ModelFileError(f"{source} has no input_size metadata: not a tumor-search model")
    try:
        return int(text)
    except ValueError:
        raise ModelFileError(f"{source}: input_size metadata is not an integer: {text!r}") from None


def _check_input(session: Any, size: int, source: Path) -> None:
    """One float input ``pixels`` of shape [batch, size, size, 3]."""
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)":
        found = ", ".join(f"{i.name} {i.type}" for i in inputs) or "none"
        raise ModelFileError(
            f"{source} must have one float input named {INPUT_NAME!r}, found: {found}"
        )
    sides = shape[1:3] if len(shape) == 4 else [0, 0]
    fixed = all(isinstance(side, int) for side in sides)
    dynamic = not any(isinstance(side, int) for side in sides)  # fed at input_size
    if len(shape) != 4 or shape[3] != 3 or not (dynamic or (fixed and sides == [size, size])):
        raise ModelFileError(
            f"{source}: input {INPUT_NAME!r} must have shape [batch, {size}, {size}, 3], "
            f"found {shape}"
        )


class OnnxClassifier:
    """A tumor-search classifier in an ONNX file.

    Attributes:
        path: The model file.
        class_names: The class of each output column.
        input_size: Side of the square input images, in pixels.
        metadata: The file's custom metadata.
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] | None = None):
        """Load and validate `path`; `providers` default to onnxruntime's CPU provider.

        Raises:
            ModelFileError: the file is missing or is not a tumor-search ONNX classifier.
        """
        import onnxruntime

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ModelFileError(f"model file not found: {self.path}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's warnings are not the user's business
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own Fail, InvalidGraph, ...
            detail = " ".join(str(exc).split())[:200]
            raise ModelFileError(f"not an ONNX model: {self.path}: {detail}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._validate()

    def _validate(self) -> None:
        source = self.path
        if self.metadata.get("producer") != PRODUCER:
            raise ModelFileError(
                f"{source} is not a classifier exported by tumor-search "
                f"(metadata producer is {self.metadata.get('producer')!r}, not {PRODUCER!r})"
            )
        self.class_names = _class_names(self.metadata, source)
        self.input_size = _input_size(self.metadata, source)
        _check_input(self.session, self.input_size, source)
        outputs = self.session.get_outputs()
        named = [o for o in outputs if o.name == OUTPUT_NAME]
        self._output = (named or outputs)[0]
        width = self._output.shape[-1] if self._output.shape else None
        if width != len(self.class_names):
            raise ModelFileError(
                f"{source}: output {self._output.name!r} has {width} columns but "
                f"class_names lists {len(self.class_names)} classes"
            )

    def predict(self, pixels_uint8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities, shape ``(n, classes)``, of ``(n, size, size, 3)`` uint8 images."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pixels = np.asarray(pixels_uint8)
        rows = []
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size].astype(np.float32)
            (probs,) = self.session.run([self._output.name], {INPUT_NAME: batch})
            rows.append(np.asarray(probs, dtype=np.float64))
        if not rows:
            return np.zeros((0, len(self.class_names)), dtype=np.float64)
        return np.concatenate(rows)
