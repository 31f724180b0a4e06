"""`small_cnn`: a compact network of our own, registered like any other backbone."""

from __future__ import annotations

from typing import Any

from models.registry import register_backbone


@register_backbone(
    name="small_cnn",
    family="small_cnn",
    module=None,
    preprocessing="unit",
    default_size=64,
    min_size=32,
    feature_dim=128,
    imagenet_file=None,
    cuts=(("block3", "block4_conv", 64),),
)
def small_cnn(input_size: int, weights: str | None) -> Any:
    """Four conv / batch-norm / ReLU / max-pool blocks, then global average pooling.

    Learns from a few hundred images from scratch. Takes preprocessed input (x / 255);
    returns 128 pooled features.

    Raises:
        ValueError: `weights` is not None (there are no ImageNet weights), as Keras
            applications raise for weights they do not have.
    """
    from models.backend import keras_module
    from models.builder import FROM_SCRATCH_BN_MOMENTUM

    if weights is not None:
        raise ValueError(f"small_cnn has no {weights} weights")
    keras = keras_module()
    inputs = keras.Input((input_size, input_size, 3))
    x = inputs
    for i, filters in enumerate((16, 32, 64, 128)):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv"
        )(x)
        x = keras.layers.BatchNormalization(
            momentum=FROM_SCRATCH_BN_MOMENTUM, name=f"block{i + 1}_bn"
        )(x)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")
