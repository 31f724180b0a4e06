"""The classifier head: globally pooled features in, class probabilities out."""

from __future__ import annotations

from typing import Any

from models.backend import keras_module
from models.layers import RateDropout
from models.trial_config import TrialConfig

HEAD_NAME = "head"


def build_head(feature_dim: int, config: TrialConfig, n_classes: int) -> Any:
    """The classifier head: pooled features in, class probabilities (float32) out."""
    keras = keras_module()
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    if config.feature_batchnorm:
        x = keras.layers.BatchNormalization(name="feature_bn")(x)
    # RateDropout even at rate 0: trials of one shape then trace one step (see the layer).
    for i in range(config.head_depth):
        x = RateDropout(config.dropout, name=f"dropout_{i + 1}")(x)
        x = keras.layers.Dense(
            config.head_width, use_bias=not config.head_batchnorm, name=f"dense_{i + 1}"
        )(x)
        if config.head_batchnorm:
            x = keras.layers.BatchNormalization(name=f"bn_{i + 1}")(x)
        x = keras.layers.Activation(
            config.head_activation, name=f"{config.head_activation}_{i + 1}"
        )(x)
    x = RateDropout(config.dropout, name="dropout_out")(x)
    # Logits and softmax in float32 so that mixed precision stays numerically safe.
    x = keras.layers.Dense(n_classes, dtype="float32", name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name=HEAD_NAME)
