"""The backbone registry: one record per backbone.

Importing this module does not import Keras, so listing backbones and validating configs
stays fast; `constructor` names a function of `keras.applications` (or ``small_cnn``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from models.errors import UnknownBackboneError

# In-graph preprocessing modes, each equal to a `keras.applications` module's preprocess_input:
#   "tf":    x / 127.5 - 1                       (MobileNet, MobileNetV2, Xception, InceptionV3, ResNetV2)
#   "torch": (x / 255 - ImageNet mean) / std     (DenseNet)
#   "none":  raw 0-255 pixels; the model normalises inside (EfficientNet(V2), MobileNetV3, ConvNeXt)
#   "unit":  x / 255                             (small_cnn, ours)
PREPROCESSING_MODES = ("tf", "torch", "none", "unit")


@dataclass(frozen=True)
class Backbone:
    """One backbone.

    Attributes:
        name: Registry name used in configs (``mobilenet_v3_small``).
        family: Model family (``mobilenet``, ``efficientnet``, ...).
        constructor: Name of the `keras.applications` function, or ``small_cnn``.
        module: `keras.applications` submodule whose ``preprocess_input`` the in-graph
            preprocessing reproduces (``None`` for our own networks).
        preprocessing: One of `PREPROCESSING_MODES`.
        default_size: Input side the backbone was designed (and pretrained) for.
        min_size: Smallest input side Keras accepts.
        feature_dim: Width of the globally pooled features.
        imagenet_file: File name Keras looks for under ``$KERAS_HOME/models`` for
            ``weights: imagenet`` at the default size (``{size}`` is filled in where the file
            depends on the input size).
    """

    name: str
    family: str
    constructor: str
    module: str | None
    preprocessing: str
    default_size: int
    min_size: int
    feature_dim: int
    imagenet_file: str | None

    def to_dict(self) -> dict:
        return asdict(self)

    def imagenet_filename(self, size: int) -> str | None:
        """The weights file Keras needs for ``weights: imagenet`` at input side `size`."""
        if self.imagenet_file is None:
            return None
        if "{size}" not in self.imagenet_file:
            return self.imagenet_file
        sizes = (128, 160, 192, 224) if self.name == "mobilenet" else (96, 128, 160, 192, 224)
        return self.imagenet_file.format(size=size if size in sizes else 224)


_RECORDS = (
    Backbone("small_cnn", "small_cnn", "small_cnn", None, "unit", 64, 32, 128, None),
    Backbone(
        "mobilenet",
        "mobilenet",
        "MobileNet",
        "mobilenet",
        "tf",
        224,
        32,
        1024,
        "mobilenet_1_0_{size}_tf_no_top.h5",
    ),
    Backbone(
        "mobilenet_v2",
        "mobilenet",
        "MobileNetV2",
        "mobilenet_v2",
        "tf",
        224,
        32,
        1280,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    ),
    Backbone(
        "mobilenet_v3_small",
        "mobilenet",
        "MobileNetV3Small",
        "mobilenet_v3",
        "none",
        224,
        32,
        576,
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    ),
    Backbone(
        "mobilenet_v3_large",
        "mobilenet",
        "MobileNetV3Large",
        "mobilenet_v3",
        "none",
        224,
        32,
        960,
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    ),
    Backbone(
        "xception",
        "xception",
        "Xception",
        "xception",
        "tf",
        299,
        71,
        2048,
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    Backbone(
        "efficientnet_b0",
        "efficientnet",
        "EfficientNetB0",
        "efficientnet",
        "none",
        224,
        32,
        1280,
        "efficientnetb0_notop.h5",
    ),
    Backbone(
        "efficientnet_b1",
        "efficientnet",
        "EfficientNetB1",
        "efficientnet",
        "none",
        240,
        32,
        1280,
        "efficientnetb1_notop.h5",
    ),
    Backbone(
        "efficientnet_b2",
        "efficientnet",
        "EfficientNetB2",
        "efficientnet",
        "none",
        260,
        32,
        1408,
        "efficientnetb2_notop.h5",
    ),
    Backbone(
        "efficientnet_b3",
        "efficientnet",
        "EfficientNetB3",
        "efficientnet",
        "none",
        300,
        32,
        1536,
        "efficientnetb3_notop.h5",
    ),
    Backbone(
        "efficientnet_v2_b0",
        "efficientnet_v2",
        "EfficientNetV2B0",
        "efficientnet_v2",
        "none",
        224,
        32,
        1280,
        "efficientnetv2-b0_notop.h5",
    ),
    Backbone(
        "resnet50_v2",
        "resnet",
        "ResNet50V2",
        "resnet_v2",
        "tf",
        224,
        32,
        2048,
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    Backbone(
        "densenet121",
        "densenet",
        "DenseNet121",
        "densenet",
        "torch",
        224,
        32,
        1024,
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    Backbone(
        "inception_v3",
        "inception",
        "InceptionV3",
        "inception_v3",
        "tf",
        299,
        75,
        2048,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    Backbone(
        "convnext_tiny",
        "convnext",
        "ConvNeXtTiny",
        "convnext",
        "none",
        224,
        32,
        768,
        "convnext_tiny_notop.h5",
    ),
)

REGISTRY: dict[str, Backbone] = {record.name: record for record in _RECORDS}


def list_backbones() -> list[Backbone]:
    """Every registered backbone, in registry order."""
    return list(_RECORDS)


def backbone_names() -> list[str]:
    return [record.name for record in _RECORDS]


def get_backbone(name: str) -> Backbone:
    """The record for `name`.

    Raises:
        UnknownBackboneError: `name` is not registered; the message lists the valid names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(backbone_names())}"
        ) from None
