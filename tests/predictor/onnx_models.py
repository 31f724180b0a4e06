"""Tiny ONNX classifiers built with the `onnx` helper API (no TensorFlow), and their maths
in numpy, for the predictor tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE = 24
CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")
# pixels -> mean colour (3 values, 0-255) -> these weights -> softmax over the 4 classes.
WEIGHTS = np.array(
    [[0.020, -0.010, 0.005, 0.000], [-0.015, 0.025, 0.000, 0.010], [0.000, -0.005, 0.020, -0.012]],
    dtype=np.float32,
)
METADATA = {
    "producer": "tumor-search",
    "class_names": json.dumps(list(CLASSES)),
    "input_size": str(SIZE),
    "format_version": "1",
}


def write_model(
    path: Path,
    metadata: dict[str, str] | None = None,
    input_shape: tuple[int | str, ...] = ("batch", SIZE, SIZE, 3),
    mean_axes: tuple[int, int] = (1, 2),
) -> Path:
    """The tiny classifier: ``pixels`` -> ReduceMean over H, W (`mean_axes`) -> MatMul ->
    Softmax, with `metadata` (default `METADATA`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["mean"], axes=list(mean_axes), keepdims=0),
        helper.make_node("MatMul", ["mean", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["class_probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("class_probabilities", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(WEIGHTS, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, METADATA if metadata is None else metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected_probabilities(pixels_uint8: np.ndarray) -> np.ndarray:
    """The tiny classifier's output for ``(n, SIZE, SIZE, 3)`` uint8 pixels, in numpy."""
    logits = pixels_uint8.astype(np.float64).mean(axis=(1, 2)) @ WEIGHTS.astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
