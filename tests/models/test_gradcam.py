"""Grad-CAM: a target layer and a heatmap for every registered backbone, the same maps
through a calibrated or wrapped model, and maps that find the phantom's lesion."""

from __future__ import annotations

import numpy as np
import pytest

from data.synth import KAGGLE_FOLDERS, phantom_with_lesion
from models import list_backbones
from models.backend import keras_module
from models.builder import create_model, encode_targets
from models.calibration import with_temperature
from models.errors import ModelError
from models.gradcam import gradcam, gradcam_chain, target_layer
from models.trial_config import Augmentation, TrialConfig

keras = keras_module()


def _untrained(backbone: str, size: int, **kwargs: object) -> object:
    config = TrialConfig(backbone, head_depth=0, fine_tune=1.0)
    return create_model(config, 4, size, "none", compile=False, **kwargs)


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


# On JAX and PyTorch (`-m backends`) a few: every backbone there costs minutes of compiling.
ON_EVERY_BACKEND = {"small_cnn", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"}


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(r, marks=[pytest.mark.backends] if r.name in ON_EVERY_BACKEND else [])
        for r in list_backbones()
    ],
    ids=lambda r: r.name,
)
def test_every_backbone_has_a_target_layer_and_a_heatmap(record) -> None:  # noqa: ANN001
    size = record.min_size
    keras.utils.set_random_seed(0)
    model = _untrained(record.name, size)
    backbone = model.get_layer("backbone")
    layer = target_layer(backbone)
    # The last 4-D output: every layer above it is pooled (2-D) or acts on pooled features.
    above = backbone.layers[backbone.layers.index(layer) + 1 :]
    assert above and all(len(later.output.shape) < 4 for later in above)
    h, w = layer.output.shape[1:3]
    pixels = _pixels(2, size)
    if keras.backend.backend() != "tensorflow" and gradcam_chain(model).tail is None:
        with pytest.raises(ModelError, match="KERAS_BACKEND=tensorflow"):
            gradcam(model, pixels)
        return
    result = gradcam(model, pixels)
    assert result.target_layer == layer.name == gradcam_chain(model).target_layer
    assert result.maps.shape == (2, h, w)
    assert result.heatmaps.shape == (2, size, size)
    assert np.isfinite(result.heatmaps).all()
    assert result.heatmaps.min() >= 0.0 and result.heatmaps.max() <= 1.0
    probs = keras.ops.convert_to_numpy(model(pixels.astype("float32"), training=False))
    np.testing.assert_allclose(result.probabilities, probs, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.classes, probs.argmax(axis=1))


@pytest.mark.backends
def test_calibrated_wrapped_and_augmented_models_give_the_same_maps() -> None:
    keras.utils.set_random_seed(1)
    size = 48
    model = _untrained("small_cnn", size, augmentation=Augmentation(flip=True, rotation=0.1))
    pixels = _pixels(3, size, seed=2)
    plain = gradcam(model, pixels)
    assert plain.maps.max() > 0  # something to compare
    assert not any("augment" in layer.name for layer in gradcam_chain(model).before)
    calibrated = with_temperature(model, 2.5)
    inputs = keras.Input((size, size, 3))
    wrapped = keras.Model(inputs, calibrated(inputs), name="wrapper")
    for other in (calibrated, wrapped):
        result = gradcam(other, pixels)
        # Dividing the logits by T scales every gradient by 1/T: the normalised map stays.
        np.testing.assert_allclose(result.maps, plain.maps, atol=1e-4)
        np.testing.assert_array_equal(result.classes, plain.classes)
    chosen = gradcam(model, pixels, classes=[3, 3, 3])
    np.testing.assert_array_equal(chosen.classes, [3, 3, 3])


def _phantoms(per_class: int, size: int, seed: int) -> tuple[np.ndarray, ...]:
    pixels, labels, masks = [], [], []
    for c, label in enumerate(KAGGLE_FOLDERS):
        for i in range(per_class):
            gray, mask = phantom_with_lesion(label, size, np.random.default_rng([seed, c, i]))
            pixels.append(np.repeat(gray[..., None], 3, axis=-1))
            labels.append(c)
            masks.append(mask > 0.5)
    return np.stack(pixels), np.asarray(labels), np.stack(masks)


@pytest.mark.backends
def test_heatmaps_of_a_trained_small_cnn_find_the_lesion() -> None:
    """small_cnn trained ~15 s on 96 px phantoms: its heatmaps put several times chance's
    share of their mass on the lesion, and peak near it far more often than chance."""
    size = 96
    x, y, _ = _phantoms(60, size, seed=0)
    keras.utils.set_random_seed(0)
    config = TrialConfig("small_cnn", head_depth=0, fine_tune=1.0, learning_rate=1e-3)
    model = create_model(config, 4, size, "none")
    targets = encode_targets(y, 4, config)
    history = model.fit(x.astype("float32"), targets, epochs=16, batch_size=16, verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    x_test, y_test, masks = _phantoms(12, size, seed=1)
    tumour = y_test != KAGGLE_FOLDERS.index("no_tumor")
    masks = masks[tumour]
    heat = gradcam(model, x_test[tumour], classes=y_test[tumour]).heatmaps
    mass_share = (heat * masks).sum(axis=(1, 2)) / np.maximum(heat.sum(axis=(1, 2)), 1e-9)
    chance = masks.mean(axis=(1, 2))
    assert mass_share.mean() > 3 * chance.mean(), (mass_share.mean(), chance.mean())
    # Near: within one cell of the 6x6 target map (16 px) of a lesion pixel; chance is
    # the share of the image that is that near.
    grid = np.indices((size, size)).reshape(2, -1).T
    near, near_area = [], []
    for h, mask in zip(heat, masks, strict=True):
        lesion = np.argwhere(mask)
        distance = np.hypot(*(grid[:, None, :] - lesion[None, :, :]).transpose(2, 0, 1)).min(1)
        near.append(distance[h.argmax()] <= size // 16)
        near_area.append(np.mean(distance <= size // 16))
    assert np.mean(near) >= 0.5 and np.mean(near) > 5 * np.mean(near_area), (
        np.mean(near),
        np.mean(near_area),
    )
