"""Building transfer models from plain configs.

`create_model(config, n_classes, input_size, weights)` is the one entry point: it returns a
compiled Keras model that takes raw 0-255 RGB pixels: augmentation (training only), the
backbone's own preprocessing, the backbone with global average pooling, the classifier
head, and a float32 softmax. The model is made of named parts so that a head trained on
cached features can be put back on its backbone (`HEAD_NAME`, `BACKBONE_NAME`).
`models.preprocessing` and `models.head` hold the parts around the backbone; their public
names are importable from here too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.backend import keras_module
from models.errors import ModelError
from models.head import build_head
from models.preprocessing import (
    build_augmentation,
    build_preprocessing,
)
from models.registry import TOP, Backbone, get_backbone
from models.trial_config import Augmentation, TrialConfig
from models.weights import WeightsPolicy, imagenet_unavailable_error, parse_weights
from models.weights_store import stored_weights

BACKBONE_NAME = "backbone"
OUTPUT_NAME = "class_probabilities"

# Batch-norm momentum for backbones trained from scratch: Keras applications use 0.99 or
# 0.999, tuned for ImageNet-sized epochs; with 10-50 steps per epoch their moving
# statistics stay stale and validation predicts a single class.
FROM_SCRATCH_BN_MOMENTUM = 0.9


def build_backbone(
    record: Backbone, input_size: int, weights: WeightsPolicy, feature_layer: str = TOP
) -> Any:
    """The backbone alone: preprocessed pixels in, globally pooled features out.

    `feature_layer` other than ``top`` cuts the network at one of the record's cuts: the
    features are the pooled input of that layer, and the layers after it are left out.

    Every backbone is made the same way, by its record's factory. ``imagenet`` loads the
    weights folder's file when it holds the backbone (`models.weights_store`), else Keras's.

    Raises:
        ModelError: the input is below the backbone's minimum size.
        WeightsError: the weights cannot be found or loaded.
    """
    check_input_size(record, input_size)
    # `weights: imagenet` takes the weights folder's file first (`weights import`), then Keras's.
    stored = stored_weights(record.name) if weights.kind == "imagenet" else None
    try:
        backbone = record.factory(
            input_size, "imagenet" if weights.kind == "imagenet" and stored is None else None
        )
    except Exception as exc:
        if weights.kind == "imagenet":
            raise imagenet_unavailable_error(record, input_size, reason=str(exc)) from exc
        raise
    if weights.kind == "file":
        weights.load_into(backbone)
    if stored is not None:
        WeightsPolicy("file", stored).load_into(backbone)
    if weights.kind == "none":
        set_bn_momentum(backbone, FROM_SCRATCH_BN_MOMENTUM)
    keras = keras_module()
    output = backbone.outputs[0]
    cut = record.cut(feature_layer)
    if cut is not None:
        inner = backbone.get_layer(cut[0]).input
        output = keras.layers.GlobalAveragePooling2D(name=f"cut_{feature_layer}_pool")(inner)
    # The same layers under one name, so that every model finds its backbone the same way.
    return keras.Model(backbone.inputs[0], output, name=BACKBONE_NAME)


def check_input_size(record: Backbone, input_size: int) -> None:
    """Refuse an input side below the backbone's minimum (`ModelError`)."""
    if input_size < record.min_size:
        raise ModelError(
            f"input size {input_size}px is below {record.name}'s minimum of {record.min_size}px"
        )


def set_bn_momentum(model: Any, momentum: float) -> None:
    """Set the moving-statistics momentum of every batch-norm layer (from-scratch training)."""
    keras = keras_module()
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def apply_fine_tuning(
    backbone: Any,
    fraction: float | None = None,
    layers: int | None = None,
    keep_bn_frozen: bool = True,
) -> int:
    """Make the top layers of `backbone` trainable and freeze the rest.

    Args:
        backbone: The backbone model.
        fraction: Share of its layers to train, counted from the top (0 freezes all).
        layers: Number of top layers to train (instead of `fraction`).
        keep_bn_frozen: Keep batch-norm layers frozen, as the Keras transfer-learning
            guide does for pretrained backbones.

    Returns:
        The number of layers made trainable.
    """
    keras = keras_module()
    n = len(backbone.layers)
    if layers is None:
        layers = int(math.ceil((fraction or 0.0) * n))
    layers = max(0, min(layers, n))
    if layers == 0:
        backbone.trainable = False
        return 0
    backbone.trainable = True
    trainable = 0
    for i, layer in enumerate(backbone.layers):
        on = i >= n - layers
        if on and keep_bn_frozen and isinstance(layer, keras.layers.BatchNormalization):
            on = False
        layer.trainable = on
        trainable += int(on)
    return trainable


def _optimizer(config: TrialConfig) -> Any:
    """Adam, with AdamW's decoupled weight decay for ``adamw``: one optimizer whose decay is
    a variable (`models.layers.DecayAdam`), so that the choice does not change the step."""
    from models.layers import DecayAdam

    decay = config.weight_decay if config.optimizer == "adamw" else 0.0
    return DecayAdam(learning_rate=config.learning_rate, decay=decay)


def compile_model(model: Any, config: TrialConfig, jit_compile: bool | str = "auto") -> Any:
    """Compile with the config's optimizer and categorical cross-entropy on the targets
    `encode_targets` makes: one-hot rows with the label smoothing already in them, so that
    trials with other smoothing compile the same step (Keras's `label_smoothing` argument
    is a constant of the traced loss)."""
    keras = keras_module()
    loss = keras.losses.CategoricalCrossentropy()
    model.compile(
        optimizer=_optimizer(config), loss=loss, metrics=["accuracy"], jit_compile=jit_compile
    )
    return model


def encode_targets(y: np.ndarray, n_classes: int, config: TrialConfig) -> np.ndarray:
    """Integer labels as the compiled loss expects them: one-hot rows, smoothed as Keras's
    ``label_smoothing`` would (``(1 - s) * one_hot + s / n_classes``)."""
    s = float(config.label_smoothing)
    one_hot = np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
    return one_hot * np.float32(1.0 - s) + np.float32(s / n_classes) if s > 0 else one_hot


def create_model(
    config: TrialConfig,
    n_classes: int,
    input_size: int,
    weights: str | WeightsPolicy = "none",
    augmentation: Augmentation | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    compile: bool = True,
    jit_compile: bool | str = "auto",
    seed: int | None = None,
) -> Any:
    """Build (and compile) a transfer model for `config`: the one way models are made.

    Args:
        config: The model's configuration (never an Optuna trial).
        n_classes: Number of classes.
        input_size: Side of the square input images, in pixels.
        weights: ``imagenet``, ``none`` or a path to a weights file (see `models.weights`).
        augmentation: Augmentation layers to put in front (training only).
        class_names: Names stored in the model's output layer, in label order.
        compile: Compile with the config's optimizer and loss.
        jit_compile: Passed to `Model.compile` (XLA).
        seed: Seed of the augmentation layers.

    Raises:
        ModelError: an impossible combination (unknown backbone, input too small, frozen
            backbone without weights).
        WeightsError: the weights cannot be found or loaded.
    """
    from models.layers import ClassProbabilities

    keras = keras_module()
    record = get_backbone(config.backbone)
    policy = parse_weights(weights)
    _check_request(record, config, policy, input_size, n_classes, class_names)

    backbone = build_backbone(record, input_size, policy, config.feature_layer)
    pretrained = policy.kind != "none"
    apply_fine_tuning(backbone, fraction=config.fine_tune, keep_bn_frozen=pretrained)

    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = inputs
    augment = build_augmentation(augmentation or Augmentation(), seed=seed)
    if augment is not None:
        x = augment(x)
    x = build_preprocessing(record)(x)
    # Pretrained backbones run in inference mode (frozen batch-norm statistics), as in the
    # Keras transfer-learning guide; from-scratch backbones learn their statistics.
    x = backbone(x, training=False) if pretrained else backbone(x)
    x = build_head(record.feature_dim_at(config.feature_layer), config, n_classes)(x)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    outputs = ClassProbabilities(names, name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, outputs, name=f"{record.name}_transfer")
    if compile:
        compile_model(model, config, jit_compile=jit_compile)
    return model


def _check_request(
    record: Backbone,
    config: TrialConfig,
    policy: WeightsPolicy,
    input_size: int,
    n_classes: int,
    class_names: list[str] | tuple[str, ...] | None,
) -> None:
    """Refuse, before anything is built, a model that cannot work as asked."""
    if policy.kind == "none" and config.fine_tune == 0:
        raise ModelError(
            f"a frozen {record.name} with weights 'none' has constant random features: "
            "use weights 'imagenet' or a weights file, or set fine_tune above 0 to train it"
        )
    check_input_size(record, input_size)
    record.cut(config.feature_layer)  # ModelError: the backbone has no such layer
    if n_classes < 2:
        raise ModelError(f"need at least 2 classes, got {n_classes}")
    if class_names is not None and len(class_names) != n_classes:
        raise ModelError(f"{len(class_names)} class names for {n_classes} classes")


def build_training_state(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Create the optimizer, loss and metric variables before the first `fit`.

    Keras' TensorFlow trainer otherwise creates them while tracing the first train step,
    which makes TensorFlow trace that step twice: on 2 CPU cores that doubled a
    MobileNetV3's first epoch (28 s -> 9 s measured). Keras does the same itself under a
    distribution strategy (`Trainer._symbolic_build`), after a symbolic pass through the
    whole model for the shape of its predictions; a built model with one output states
    that shape already, and skipping the pass saves a MobileNetV3Small at 64 px 0.25 s
    of its 0.6 (`_build_from_outputs`).
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    if keras_module().backend.backend() == "tensorflow" and symbolic_build is not None:
        if not _build_from_outputs(model, x, y):
            symbolic_build(data_batch=(x[:2], y[:2], None))
    elif model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _build_from_outputs(model: Any, x: np.ndarray, y: np.ndarray) -> bool:
    """`Trainer._symbolic_build`'s metric, loss and optimizer state, its predictions' shape
    read off the model's one output; False (nothing built) where the model is not built or
    has several outputs, or where Keras's trainer lacks what this uses."""
    keras = keras_module()
    try:
        from keras.src.backend import compute_output_spec  # what `_symbolic_build` calls
    except ImportError:
        return False
    outputs = getattr(model, "outputs", None) or []
    needed = ("_compile_metrics", "_compile_loss", "_compute_loss", "_post_build")
    if len(outputs) != 1 or not all(hasattr(model, name) for name in needed):
        return False
    if not all(layer.built for layer in model._flatten_layers()):
        return False

    def spec(shape: tuple[Any, ...], dtype: Any) -> Any:
        return keras.KerasTensor((2, *shape), dtype=keras.backend.standardize_dtype(dtype))

    xs, ys = spec(x.shape[1:], x.dtype), spec(y.shape[1:], y.dtype)
    predicted = spec(tuple(outputs[0].shape[1:]), outputs[0].dtype)
    metrics, loss = model._compile_metrics, model._compile_loss
    if metrics is not None and not metrics.built:
        compute_output_spec(model.compute_metrics, xs, ys, predicted, None)
    if loss is not None and not loss.built:
        compute_output_spec(model._compute_loss, xs, ys, predicted, None, False)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model._post_build()
    return True


def count_params(model: Any) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}
