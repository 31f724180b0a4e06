"""The Keras applications we search over, registered in the backbone registry.

Each record's factory calls its ``keras.applications`` function with the signature every
application shares (``input_shape``, ``include_top=False``, ``weights``, ``pooling="avg"``);
Keras is imported only when a factory is called.
"""

from __future__ import annotations

import warnings
from typing import Any

from models.registry import Backbone, BackboneFactory, register


def keras_application(constructor: str) -> BackboneFactory:
    """The factory of ``keras.applications.<constructor>``, without its classifier top.

    Args:
        constructor: Name of the `keras.applications` function (``MobileNetV2``).

    Returns:
        A `BackboneFactory` named `constructor`.
    """

    def factory(input_size: int, weights: str | None) -> Any:
        from models.backend import keras_module

        application = getattr(keras_module().applications, constructor)
        with warnings.catch_warnings():
            # "Weights for input shape (224, 224) will be loaded": noise for weights=None.
            warnings.filterwarnings("ignore", message=".*input shape.*", category=UserWarning)
            return application(
                input_shape=(input_size, input_size, 3),
                include_top=False,
                weights=weights,
                pooling="avg",
            )

    factory.__name__ = factory.__qualname__ = constructor
    factory.__doc__ = f"``keras.applications.{constructor}``, pooled features out."
    return factory


register(
    Backbone(
        name="mobilenet",
        family="mobilenet",
        factory=keras_application("MobileNet"),
        module="mobilenet",
        preprocessing="tf",
        default_size=224,
        min_size=32,
        feature_dim=1024,
        imagenet_file="mobilenet_1_0_{size}_tf_no_top.h5",
        imagenet_sizes=(128, 160, 192, 224),
    )
)

register(
    Backbone(
        name="mobilenet_v2",
        family="mobilenet",
        factory=keras_application("MobileNetV2"),
        module="mobilenet_v2",
        preprocessing="tf",
        default_size=224,
        min_size=32,
        feature_dim=1280,
        imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    )
)

register(
    Backbone(
        name="mobilenet_v3_small",
        family="mobilenet",
        factory=keras_application("MobileNetV3Small"),
        module="mobilenet_v3",
        preprocessing="none",
        default_size=224,
        min_size=32,
        feature_dim=576,
        imagenet_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    )
)

register(
    Backbone(
        name="mobilenet_v3_large",
        family="mobilenet",
        factory=keras_application("MobileNetV3Large"),
        module="mobilenet_v3",
        preprocessing="none",
        default_size=224,
        min_size=32,
        feature_dim=960,
        imagenet_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    )
)

register(
    Backbone(
        name="xception",
        family="xception",
        factory=keras_application("Xception"),
        module="xception",
        preprocessing="tf",
        default_size=299,
        min_size=71,
        feature_dim=2048,
        imagenet_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        # The middle flow's output (after block 12) and block 13's (the exit flow's first).
        cuts=(("middle", "block13_sepconv1_act", 728), ("block13", "block14_sepconv1", 1024)),
    )
)

register(
    Backbone(
        name="efficientnet_b0",
        family="efficientnet",
        factory=keras_application("EfficientNetB0"),
        module="efficientnet",
        preprocessing="none",
        default_size=224,
        min_size=32,
        feature_dim=1280,
        imagenet_file="efficientnetb0_notop.h5",
    )
)

register(
    Backbone(
        name="efficientnet_b1",
        family="efficientnet",
        factory=keras_application("EfficientNetB1"),
        module="efficientnet",
        preprocessing="none",
        default_size=240,
        min_size=32,
        feature_dim=1280,
        imagenet_file="efficientnetb1_notop.h5",
    )
)

register(
    Backbone(
        name="efficientnet_b2",
        family="efficientnet",
        factory=keras_application("EfficientNetB2"),
        module="efficientnet",
        preprocessing="none",
        default_size=260,
        min_size=32,
        feature_dim=1408,
        imagenet_file="efficientnetb2_notop.h5",
    )
)

register(
    Backbone(
        name="efficientnet_b3",
        family="efficientnet",
        factory=keras_application("EfficientNetB3"),
        module="efficientnet",
        preprocessing="none",
        default_size=300,
        min_size=32,
        feature_dim=1536,
        imagenet_file="efficientnetb3_notop.h5",
    )
)

register(
    Backbone(
        name="efficientnet_v2_b0",
        family="efficientnet_v2",
        factory=keras_application("EfficientNetV2B0"),
        module="efficientnet_v2",
        preprocessing="none",
        default_size=224,
        min_size=32,
        feature_dim=1280,
        imagenet_file="efficientnetv2-b0_notop.h5",
    )
)

register(
    Backbone(
        name="resnet50_v2",
        family="resnet",
        factory=keras_application("ResNet50V2"),
        module="resnet_v2",
        preprocessing="tf",
        default_size=224,
        min_size=32,
        feature_dim=2048,
        imagenet_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )
)

register(
    Backbone(
        name="densenet121",
        family="densenet",
        factory=keras_application("DenseNet121"),
        module="densenet",
        preprocessing="torch",
        default_size=224,
        min_size=32,
        feature_dim=1024,
        imagenet_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )
)

register(
    Backbone(
        name="inception_v3",
        family="inception",
        factory=keras_application("InceptionV3"),
        module="inception_v3",
        preprocessing="tf",
        default_size=299,
        min_size=75,
        feature_dim=2048,
        imagenet_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )
)

register(
    Backbone(
        name="convnext_tiny",
        family="convnext",
        factory=keras_application("ConvNeXtTiny"),
        module="convnext",
        preprocessing="none",
        default_size=224,
        min_size=32,
        feature_dim=768,
        imagenet_file="convnext_tiny_notop.h5",
    )
)
