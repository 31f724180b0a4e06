"""Temperature scaling inside the model graph.

A trained model is a chain: pixels -> [augmentation] -> preprocessing -> backbone -> head
(dense layers, then a float32 ``logits`` Dense and a softmax) -> `ClassProbabilities`.
`logits_model` gives the same chain up to the logits; `with_temperature` rebuilds it as
logits -> ``Rescaling(1/T)`` -> softmax -> `ClassProbabilities`, so that every consumer of
the saved model (predict, other backends, exports) gets calibrated probabilities. Scaling
the logits (not ``log(p) / T``) never meets ``log(0)`` in float32.
"""

from __future__ import annotations

from typing import Any

from models.backend import keras_module
from models.head import HEAD_NAME

TEMPERATURE_NAME = "temperature"
LOGITS_NAME = "logits"
CALIBRATED_SOFTMAX_NAME = "calibrated_softmax"


def head_logits(head: Any) -> Any:
    """The head up to its logits (the float32 Dense before the softmax)."""
    keras = keras_module()
    return keras.Model(head.inputs, head.get_layer(LOGITS_NAME).output, name=f"{HEAD_NAME}_logits")


def _chain(model: Any) -> tuple[list[Any], Any, list[Any]]:
    """The layers before the head, the head, and the layers after it (input layer left out)."""
    keras = keras_module()
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    names = [layer.name for layer in layers]
    if HEAD_NAME not in names:
        raise ValueError(f"model {model.name!r} has no {HEAD_NAME!r} part")
    i = names.index(HEAD_NAME)
    return layers[:i], layers[i], layers[i + 1 :]


def logits_model(model: Any) -> Any:
    """A model with the same input and weights that outputs the logits (float32).

    Augmentation layers are inactive at inference, so applying the chain again is exact.
    A model already calibrated gives its unscaled logits.
    """
    keras = keras_module()
    before, head, _ = _chain(model)
    inputs = keras.Input(model.inputs[0].shape[1:], name="pixels")
    x = inputs
    for layer in before:
        x = layer(x, training=False)
    return keras.Model(inputs, head_logits(head)(x), name=f"{model.name}_logits")


def _head(model: Any) -> Any:
    return _chain(model)[1]


def temperature_of(model: Any) -> float:
    """The temperature a model carries (1.0 when it carries none)."""
    try:
        layer = _head(model).get_layer(TEMPERATURE_NAME)
    except ValueError:
        return 1.0
    return float(1.0 / layer.scale)


def with_temperature(model: Any, temperature: float) -> Any:
    """The model with its head's logits divided by `temperature` before the softmax.

    The temperature lives inside the head (so the model keeps its parts: ``backbone``,
    ``head``, output), and the result shares the trained layers' weights; calibrating a
    calibrated model replaces its temperature rather than stacking a second one.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    keras = keras_module()
    before, head, after = _chain(model)
    x = head.get_layer(LOGITS_NAME).output
    x = keras.layers.Rescaling(1.0 / float(temperature), dtype="float32", name=TEMPERATURE_NAME)(x)
    x = keras.layers.Activation("softmax", dtype="float32", name=CALIBRATED_SOFTMAX_NAME)(x)
    calibrated_head = keras.Model(head.inputs, x, name=HEAD_NAME)
    inputs = keras.Input(model.inputs[0].shape[1:], name="pixels")
    y = inputs
    for layer in before:
        y = layer(y, training=False)
    y = calibrated_head(y)
    for layer in after:
        y = layer(y)
    return keras.Model(inputs, y, name=model.name)


def inference_model(model: Any) -> Any:
    """The same chain and weights without augmentation, every part called in inference mode.

    What exports trace: Keras' random image layers default to training mode when called
    without ``training``, so an exported graph would otherwise augment every image (a
    SavedModel silently; ONNX and LiteRT with random ops their runtimes refuse).
    """
    from models.preprocessing import AUGMENT_NAME

    keras = keras_module()
    before, head, after = _chain(model)
    inputs = keras.Input(model.inputs[0].shape[1:], name="pixels")
    x = inputs
    for layer in before:
        if layer.name != AUGMENT_NAME:
            x = layer(x, training=False)
    x = head(x, training=False)
    for layer in after:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)
