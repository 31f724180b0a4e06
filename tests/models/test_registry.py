"""One test parametrised over the whole registry, as keras' own application tests do."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from models.builder import build_model, build_preprocessing, reference_preprocess
from models.config import TrialConfig
from models.errors import UnknownBackboneError
from models.registry import backbone_names, get_backbone, list_backbones

REQUIRED = {
    "mobilenet",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "xception",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_v2_b0",
    "resnet50_v2",
    "densenet121",
    "inception_v3",
    "convnext_tiny",
    "small_cnn",
}


def test_registry_holds_every_required_backbone() -> None:
    assert set(backbone_names()) >= REQUIRED


@pytest.mark.parametrize("name", backbone_names())
def test_each_backbone_builds_at_its_minimum_size_and_outputs_probabilities(name: str) -> None:
    record = get_backbone(name)
    size = record.min_size
    model = build_model(
        TrialConfig(name, head_depth=1, head_width=8, fine_tune=1.0), 3, size, "none"
    )
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3)).astype("float32")
    probs = np.asarray(model(pixels, training=False))  # eager: no graph to trace
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("backbone").output.shape[-1] == record.feature_dim


@pytest.mark.parametrize("name", backbone_names())
def test_in_graph_preprocessing_equals_the_modules_preprocess_input(name: str) -> None:
    record = get_backbone(name)
    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    ours = np.asarray(build_preprocessing(record)(pixels))
    if record.module is None:
        expected = reference_preprocess(record, pixels)
    else:
        module = importlib.import_module(f"keras.applications.{record.module}")
        expected = np.asarray(module.preprocess_input(pixels.copy()))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference_preprocess(record, pixels), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in backbone_names() if n != "small_cnn"])
def test_imagenet_file_name_is_the_one_keras_asks_for(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file name our error message gives is the one Keras asks `get_file` for.

    `get_file` is replaced by one that records the name and fails, so no download is tried
    whether or not the machine is online (Keras' applications all call it through the
    `file_utils` module, so the replacement sees every request)."""
    from keras.src.utils import file_utils

    asked: list[str] = []

    def fake_get_file(fname: str | None = None, origin: str | None = None, **kwargs: object) -> str:
        asked.append(fname or "")
        raise RuntimeError("download refused by the test")

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    record = get_backbone(name)
    from models.builder import build_backbone
    from models.errors import WeightsError
    from models.weights import parse_weights

    with pytest.raises(WeightsError) as info:
        build_backbone(record, record.min_size, parse_weights("imagenet"))
    assert asked == [record.imagenet_filename(record.min_size)]
    assert asked[0] in str(info.value)


def test_unknown_backbone_lists_the_valid_names() -> None:
    with pytest.raises(UnknownBackboneError) as info:
        get_backbone("resnet9000")
    for name in ("small_cnn", "xception", "convnext_tiny"):
        assert name in str(info.value)


def test_records_are_complete() -> None:
    for record in list_backbones():
        assert record.min_size <= record.default_size
        assert record.feature_dim > 0
        assert record.preprocessing in ("tf", "torch", "none", "unit")
