"""Grad-CAM (Selvaraju et al., 2017): where in an image a trained model looked.

A tumor-search model is a chain of parts: pixels -> [augmentation] -> preprocessing ->
``backbone`` (a nested model, pooled features out) -> ``head`` (logits, maybe a temperature,
softmax) -> `ClassProbabilities`. The target layer is the backbone's last 4-D output, found
by walking its layers from the top (no table of layer names). `gradcam_chain` splits a model
(or a model that wraps one) into those parts; `gradcam` runs them under one
`tf.GradientTape` and weighs the target layer's channels by the mean gradient of the
predicted class's logit. On JAX and PyTorch the same gradient comes from their own
autodiff (`jax.grad`, torch's autograd): the model is split at the target layer, and a
function of that map alone (the backbone's tail, in every registry backbone its global
pooling; then the head and what follows it) gives the score, differentiated with respect to
the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from models.backend import call_inference, keras_module
from models.builder import BACKBONE_NAME
from models.errors import ModelError
from models.head import HEAD_NAME
from models.preprocessing import AUGMENT_NAME

LOGITS_NAME = "logits"
GRADCAM_BACKENDS = ("tensorflow", "jax", "torch")


@dataclass(frozen=True)
class GradCamChain:
    """A model split for Grad-CAM.

    Attributes:
        before: Layers between the pixels and the backbone (augmentation left out).
        backbone: Preprocessed pixels -> [target layer's output, pooled features].
        between: Layers between the backbone and the head (none in models made today).
        head: Pooled features -> [score, probabilities]; the score is the logits where the
            head has a ``logits`` layer (or any Dense layer), else the probabilities.
        after: Layers after the head, applied as they are.
        target_layer: Name of the backbone layer whose output is weighed.
    """

    before: tuple[Any, ...]
    backbone: Any
    between: tuple[Any, ...]
    head: Any
    after: tuple[Any, ...]
    target_layer: str
    tail: Any = None  # the target layer's output -> pooled features (JAX and PyTorch)


@dataclass(frozen=True)
class GradCamResult:
    """Heatmaps and predictions for a batch of images.

    Attributes:
        heatmaps: ``(n, size, size)`` float32 in [0, 1], upsampled to the input side.
        maps: ``(n, h, w)`` the same at the target layer's resolution.
        classes: ``(n,)`` the class each heatmap explains (the predicted one by default).
        probabilities: ``(n, k)`` the model's output.
        target_layer: Name of the backbone layer used.
    """

    heatmaps: np.ndarray
    maps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    target_layer: str


def check_backend() -> None:
    """Refuse a Keras backend whose gradients are not wired up here (`ModelError`)."""
    backend = keras_module().backend.backend()
    if backend not in GRADCAM_BACKENDS:
        raise ModelError(
            f"Grad-CAM is implemented for the TensorFlow, JAX and PyTorch backends, not "
            f"{backend!r}: run with KERAS_BACKEND=tensorflow"
        )


def target_layer(backbone: Any) -> Any:
    """The backbone's last layer with a 4-D (batch, height, width, channels) output.

    Raises:
        ModelError: no layer of the backbone has a 4-D output.
    """
    for layer in reversed(backbone.layers):
        try:
            output = layer.output
        except (AttributeError, ValueError):  # a layer called more than once
            continue
        if not isinstance(output, list | tuple) and len(output.shape) == 4:
            return layer
    raise ModelError(f"backbone {backbone.name!r} has no layer with a 4-D output")


def _contains(model: Any, name: str) -> bool:
    return any(
        layer.name == name or (hasattr(layer, "layers") and _contains(layer, name))
        for layer in model.layers
    )


def _flatten(model: Any) -> list[Any]:
    """The model's layers in call order; a nested model that holds the backbone (a wrapped
    transfer model) is opened up, every other layer is kept whole."""
    keras = keras_module()
    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name in (BACKBONE_NAME, HEAD_NAME):
            out.append(layer)
        elif isinstance(layer, keras.Model) and _contains(layer, BACKBONE_NAME):
            out.extend(_flatten(layer))
        else:
            out.append(layer)
    return out


def _is_augmentation(layer: Any) -> bool:
    return layer.name == AUGMENT_NAME or type(layer).__name__.startswith("Random")


def _score_layer(head: Any) -> Any | None:
    """The head's logits: its ``logits`` layer, else its last Dense layer, else None."""
    keras = keras_module()
    names = [layer.name for layer in head.layers]
    if LOGITS_NAME in names:
        return head.get_layer(LOGITS_NAME)
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    return dense[-1] if dense else None


def gradcam_chain(model: Any) -> GradCamChain:
    """Split `model` into the parts Grad-CAM runs under one gradient tape.

    Raises:
        ModelError: the model has no ``backbone`` and ``head`` parts (not made by
            tumor-search), or its backbone has no 4-D output.
    """
    keras = keras_module()
    layers = _flatten(model)
    names = [layer.name for layer in layers]
    for part in (BACKBONE_NAME, HEAD_NAME):
        if part not in names:
            raise ModelError(
                f"model {model.name!r} has no {part!r} part: Grad-CAM needs a model "
                "saved by tumor-search"
            )
    b, h = names.index(BACKBONE_NAME), names.index(HEAD_NAME)
    backbone, head = layers[b], layers[h]
    target = target_layer(backbone)
    # A nested model's inner layers are not on the outer graph: take both outputs from the
    # backbone itself, and run the parts one after the other.
    conv = keras.Model(backbone.input, [target.output, backbone.output])
    score = _score_layer(head)
    head_out = keras.Model(
        head.inputs, [score.output if score is not None else head.output, head.output]
    )
    return GradCamChain(
        before=tuple(layer for layer in layers[:b] if not _is_augmentation(layer)),
        backbone=conv,
        between=tuple(layers[b + 1 : h]),
        head=head_out,
        after=tuple(layers[h + 1 :]),
        target_layer=target.name,
        tail=_tail(conv),
    )


def _tail(conv: Any) -> Any:
    """The backbone's layers after the target layer as a model of its output alone, or None
    where they also read earlier tensors (the gradient is then TensorFlow's only)."""
    try:
        return keras_module().Model(*conv.outputs)
    except ValueError:
        return None


def _batch_maps(
    chain: GradCamChain, pixels: np.ndarray, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM maps at the target layer's resolution, the classes explained, the outputs."""
    if keras_module().backend.backend() != "tensorflow":
        return _autodiff_maps(chain, pixels, classes)
    import tensorflow as tf

    x = tf.convert_to_tensor(pixels, dtype=tf.float32)
    with tf.GradientTape() as tape:
        # Watch the input: a frozen backbone's weights are not watched, its output must be.
        tape.watch(x)
        y = x
        for layer in chain.before:
            y = call_inference(layer, y)
        conv, features = chain.backbone(y, training=False)
        for layer in chain.between:
            features = call_inference(layer, features)
        score, probs = chain.head(features, training=False)
        for layer in chain.after:
            probs = call_inference(layer, probs)
        chosen = tf.argmax(probs, axis=-1) if classes is None else tf.constant(classes)
        target = tf.gather(tf.cast(score, tf.float32), chosen, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(target, conv), tf.float32)
    conv = tf.cast(conv, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(conv * weights, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam = cam / np.where(peak > 0, peak, 1.0)[:, None, None]
    return cam.astype(np.float32), np.asarray(chosen, np.int64), np.asarray(probs, np.float32)


# JAX and PyTorch: the gradient of the score with respect to the target layer's map.


def _autodiff_feature_map(chain: Any, pixels: np.ndarray) -> Any:
    """The target layer's output for raw pixels, as a backend tensor."""
    y = keras_module().ops.convert_to_tensor(np.asarray(pixels, np.float32))
    for layer in chain.before:
        y = call_inference(layer, y)
    conv, _ = chain.backbone(y, training=False)
    return conv


def _scores_from_map(chain: Any, conv: Any) -> tuple[Any, Any]:
    """(score, probabilities) from the target layer's output."""
    features = chain.tail(conv, training=False)
    for layer in chain.between:
        features = call_inference(layer, features)
    score, probs = chain.head(features, training=False)
    for layer in chain.after:
        probs = call_inference(layer, probs)
    return score, probs


def _jax_grads(chain: Any, conv: Any, classes: np.ndarray | None) -> tuple[Any, ...]:
    import jax
    import jax.numpy as jnp

    conv = jnp.asarray(conv, jnp.float32)
    _, probs = _scores_from_map(chain, conv)
    chosen = jnp.argmax(probs, axis=-1) if classes is None else jnp.asarray(classes)

    def target(c: Any) -> Any:
        score, _ = _scores_from_map(chain, c)
        picked = jnp.take_along_axis(score.astype(jnp.float32), chosen[:, None], axis=1)
        return jnp.sum(picked)

    return conv, jax.grad(target)(conv), chosen, probs


def _torch_grads(chain: Any, conv: Any, classes: np.ndarray | None) -> tuple[Any, ...]:
    import torch

    conv = conv.detach().float().requires_grad_(True)
    score, probs = _scores_from_map(chain, conv)
    if classes is None:
        chosen = torch.argmax(probs, dim=-1)
    else:
        chosen = torch.as_tensor(classes, device=score.device)
    score.float().gather(1, chosen[:, None].long()).sum().backward()
    return conv.detach(), conv.grad, chosen, probs.detach()


def _autodiff_maps(
    chain: Any, pixels: np.ndarray, classes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM maps at the target layer's resolution, the classes explained, the outputs."""
    keras = keras_module()
    if chain.tail is None:
        raise ModelError(
            f"Grad-CAM on {keras.backend.backend()} needs the backbone's layers after "
            f"{chain.target_layer!r} to depend on its output alone, and this backbone's do "
            "not: run with KERAS_BACKEND=tensorflow"
        )
    conv = _autodiff_feature_map(chain, pixels)
    grads_of = _jax_grads if keras.backend.backend() == "jax" else _torch_grads
    conv, grads, chosen, probs = grads_of(chain, conv, classes)
    conv, grads = (keras.ops.convert_to_numpy(t).astype(np.float32) for t in (conv, grads))
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((conv * weights).sum(axis=-1), 0.0)
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam = cam / np.where(peak > 0, peak, 1.0)[:, None, None]
    return (
        cam.astype(np.float32),
        np.asarray(keras.ops.convert_to_numpy(chosen), np.int64),
        np.asarray(keras.ops.convert_to_numpy(probs), np.float32),
    )


def upsample(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A ``(h, w)`` heatmap resized (bilinear) to ``(size, size)``, clipped to [0, 1]."""
    image = Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
    resized = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    return np.clip(resized, 0.0, 1.0)


def gradcam(
    model: Any,
    pixels: np.ndarray,
    classes: np.ndarray | list[int] | None = None,
    batch_size: int = 16,
    chain: GradCamChain | None = None,
) -> GradCamResult:
    """Grad-CAM heatmaps of `model` for raw 0-255 RGB `pixels` ``(n, size, size, 3)``.

    Args:
        model: A model made by `models.builder.create_model` (trained, calibrated or
            wrapped in another model).
        pixels: Images at the model's input size.
        classes: The class to explain per image (default: the predicted one).
        batch_size: Images per gradient pass.
        chain: A chain from `gradcam_chain(model)`, to reuse over many calls.

    Raises:
        ModelError: a backend other than TensorFlow, or a model without the parts above.
    """
    check_backend()
    chain = chain or gradcam_chain(model)
    pixels = np.asarray(pixels)
    wanted = None if classes is None else np.asarray(classes, np.int64)
    maps, chosen, probs = [], [], []
    for start in range(0, len(pixels), batch_size):
        part = None if wanted is None else wanted[start : start + batch_size]
        m, c, p = _batch_maps(chain, pixels[start : start + batch_size], part)
        maps.append(m)
        chosen.append(c)
        probs.append(p)
    all_maps = np.concatenate(maps)
    size = int(pixels.shape[1])
    heatmaps = np.stack([upsample(m, size) for m in all_maps]) if len(all_maps) else all_maps
    return GradCamResult(
        heatmaps, all_maps, np.concatenate(chosen), np.concatenate(probs), chain.target_layer
    )
