"""What runs on raw pixels before the backbone: augmentation, then its own preprocessing.

Both are Keras blocks of built-in layers inside the model graph, so that an exported model
takes raw 0-255 RGB pixels and reloads in ``safe_mode``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.backend import keras_module
from models.registry import Backbone
from models.trial_config import Augmentation

PREPROCESS_NAME = "preprocess"
AUGMENT_NAME = "augment"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def reference_preprocess(record: Backbone, pixels: np.ndarray) -> np.ndarray:
    """What the backbone's own ``preprocess_input`` does to raw pixels, in numpy.

    The in-graph preprocessing of `build_preprocessing` must equal this; the tests compare
    both with `keras.applications.<module>.preprocess_input`.
    """
    x = pixels.astype(np.float32)
    if record.preprocessing == "tf":
        return x / 127.5 - 1.0
    if record.preprocessing == "torch":
        return (x / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(
            IMAGENET_STD, np.float32
        )
    if record.preprocessing == "unit":
        return x / 255.0
    return x


def build_preprocessing(record: Backbone) -> Any:
    """The backbone's preprocessing as a Keras block of built-in layers (safe to reload)."""
    keras = keras_module()
    layers: list[Any] = []
    if record.preprocessing == "tf":
        layers.append(keras.layers.Rescaling(1.0 / 127.5, offset=-1.0))
    elif record.preprocessing == "torch":
        layers.append(keras.layers.Rescaling(1.0 / 255.0))
        layers.append(
            keras.layers.Normalization(
                mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD]
            )
        )
    elif record.preprocessing == "unit":
        layers.append(keras.layers.Rescaling(1.0 / 255.0))
    else:
        layers.append(keras.layers.Identity())
    return keras.Sequential(layers, name=PREPROCESS_NAME)


def build_augmentation(augmentation: Augmentation, seed: int | None = None) -> Any | None:
    """Random augmentation layers on raw pixels, or None when nothing is enabled."""
    if not augmentation.enabled:
        return None
    keras = keras_module()
    layers: list[Any] = []
    if augmentation.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augmentation.rotation > 0:
        layers.append(
            keras.layers.RandomRotation(augmentation.rotation, fill_mode="constant", seed=seed)
        )
    if augmentation.zoom > 0:
        layers.append(keras.layers.RandomZoom(augmentation.zoom, fill_mode="constant", seed=seed))
    if augmentation.translation > 0:
        t = augmentation.translation
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode="constant", seed=seed))
    if augmentation.contrast > 0:
        layers.append(
            keras.layers.RandomContrast(augmentation.contrast, value_range=(0, 255), seed=seed)
        )
    if keras.backend.backend() == "jax":
        # Keras marks its rotation, zoom and translation layers unfit for XLA (for
        # TensorFlow's sake), and one such layer turns a JAX model's whole train step eager:
        # Xception fine-tuning on an H200 took 137 s an epoch. On JAX their affine transform
        # traces like any op.
        for layer in layers:
            layer.supports_jit = True
    return keras.Sequential(layers, name=AUGMENT_NAME)
