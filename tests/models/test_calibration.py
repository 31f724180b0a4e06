from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.builder import create_model
from models.calibration import logits_model, temperature_of, with_temperature
from models.trial_config import Augmentation, TrialConfig
from search.results.predict import load_model

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture()
def model_and_pixels() -> tuple[object, np.ndarray]:
    config = TrialConfig(
        backbone="small_cnn", head_depth=1, head_width=16, dropout=0.2, fine_tune=1.0
    )
    augmentation = Augmentation(flip=True, rotation=0.05, contrast=0.1)
    model = create_model(config, 4, 32, "none", augmentation=augmentation, class_names=CLASSES)
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    return model, pixels


def test_logits_model_gives_the_logits_of_the_probabilities(model_and_pixels) -> None:
    model, pixels = model_and_pixels
    logits = logits_model(model).predict(pixels, verbose=0)
    np.testing.assert_allclose(_softmax(logits), model.predict(pixels, verbose=0), atol=1e-6)
    assert temperature_of(model) == 1.0


def test_temperature_divides_the_logits_and_survives_saving(
    model_and_pixels, tmp_path: Path
) -> None:
    model, pixels = model_and_pixels
    logits = logits_model(model).predict(pixels, verbose=0)
    calibrated = with_temperature(model, 2.5)
    expected = _softmax(logits / 2.5)
    np.testing.assert_allclose(calibrated.predict(pixels, verbose=0), expected, atol=1e-6)
    path = tmp_path / "model.keras"
    calibrated.save(path)
    loaded = load_model(path)
    assert temperature_of(loaded) == pytest.approx(2.5)
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), expected, atol=1e-6)
    assert [layer.name for layer in loaded.layers][-3:] == [
        "backbone",
        "head",
        "class_probabilities",
    ]


def test_recalibrating_replaces_the_temperature(model_and_pixels) -> None:
    model, pixels = model_and_pixels
    logits = logits_model(model).predict(pixels, verbose=0)
    twice = with_temperature(with_temperature(model, 2.0), 4.0)
    assert temperature_of(twice) == pytest.approx(4.0)
    np.testing.assert_allclose(logits_model(twice).predict(pixels, verbose=0), logits, atol=1e-6)
    np.testing.assert_allclose(twice.predict(pixels, verbose=0), _softmax(logits / 4.0), atol=1e-6)


def test_saturated_logits_stay_finite(model_and_pixels) -> None:
    """Large logits give probabilities of exactly 0 in float32; scaling the logits, not
    log(p), keeps the calibrated output finite."""
    model, pixels = model_and_pixels
    head = model.get_layer("head")
    dense = head.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 1e4, bias])
    probs = with_temperature(model, 3.0).predict(pixels, verbose=0)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_temperature_must_be_positive(model_and_pixels) -> None:
    model, _ = model_and_pixels
    with pytest.raises(ValueError, match="positive"):
        with_temperature(model, 0.0)
