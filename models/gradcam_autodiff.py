"""Grad-CAM's gradients on the JAX and PyTorch backends (TensorFlow's are in `gradcam`).

Both split the model at the target layer: the backbone up to it gives the feature map, and
a function of that map alone (the backbone's tail, in every registry backbone its global
pooling; then the head and what follows it) gives the score, which the backend's own
autodiff (`jax.grad`, torch's autograd) differentiates with respect to the map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.backend import call_inference, keras_module
from models.errors import ModelError


def _feature_map(chain: Any, pixels: np.ndarray) -> Any:
    """The target layer's output for raw pixels, as a backend tensor."""
    y = keras_module().ops.convert_to_tensor(np.asarray(pixels, np.float32))
    for layer in chain.before:
        y = call_inference(layer, y)
    conv, _ = chain.backbone(y, training=False)
    return conv


def _scores(chain: Any, conv: Any) -> tuple[Any, Any]:
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
    _, probs = _scores(chain, conv)
    chosen = jnp.argmax(probs, axis=-1) if classes is None else jnp.asarray(classes)

    def target(c: Any) -> Any:
        score, _ = _scores(chain, c)
        picked = jnp.take_along_axis(score.astype(jnp.float32), chosen[:, None], axis=1)
        return jnp.sum(picked)

    return conv, jax.grad(target)(conv), chosen, probs


def _torch_grads(chain: Any, conv: Any, classes: np.ndarray | None) -> tuple[Any, ...]:
    import torch

    conv = conv.detach().float().requires_grad_(True)
    score, probs = _scores(chain, conv)
    if classes is None:
        chosen = torch.argmax(probs, dim=-1)
    else:
        chosen = torch.as_tensor(classes, device=score.device)
    score.float().gather(1, chosen[:, None].long()).sum().backward()
    return conv.detach(), conv.grad, chosen, probs.detach()


def batch_maps(
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
    conv = _feature_map(chain, pixels)
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
