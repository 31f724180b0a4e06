"""One test parametrised over the whole registry, as keras' own application tests do."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from models.backend import keras_module
from models.builder import create_model
from models.errors import UnknownBackboneError
from models.preprocessing import build_preprocessing, reference_preprocess
from models.registry import (
    REGISTRY,
    backbone_names,
    get_backbone,
    list_backbones,
    register,
    register_backbone,
)
from models.trial_config import TrialConfig
from tests.conftest import ROOT

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


@pytest.mark.backends
@pytest.mark.parametrize("name", backbone_names())
def test_each_backbone_builds_at_its_minimum_size_and_outputs_probabilities(name: str) -> None:
    record = get_backbone(name)
    size = record.min_size
    model = create_model(
        TrialConfig(name, head_depth=1, head_width=8, fine_tune=1.0), 3, size, "none"
    )
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3)).astype("float32")
    if keras_module().backend.backend() == "jax":
        probs = np.asarray(model.predict_on_batch(pixels))  # one jit: op by op takes 5x longer
    else:  # eager: no graph to trace (convert_to_numpy detaches torch's tensors)
        probs = keras_module().ops.convert_to_numpy(model(pixels, training=False))
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


@pytest.mark.parametrize("name", [r.name for r in list_backbones() if r.imagenet_file])
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


@pytest.mark.parametrize("name", [r.name for r in list_backbones() if r.cuts])
def test_each_cut_ends_the_network_at_its_layer(name: str) -> None:
    from models.builder import build_backbone
    from models.weights import WeightsPolicy

    record = get_backbone(name)
    keras = keras_module()
    keras.utils.set_random_seed(3)
    full = build_backbone(record, record.min_size, WeightsPolicy("none"))
    full_layers = [layer.name for layer in full.layers]
    for cut, layer, channels in record.cuts:
        keras.utils.set_random_seed(3)
        net = build_backbone(record, record.min_size, WeightsPolicy("none"), cut)
        names = [x.name for x in net.layers]
        assert net.output.shape[-1] == channels == record.feature_dim_at(cut)
        assert layer not in names and names[-1] == f"cut_{cut}_pool"
        assert len(names) < len(full_layers)  # the layers after the cut are left out
        pixels = np.random.default_rng(0).uniform(-1, 1, (2, record.min_size, record.min_size, 3))
        inner = keras.Model(full.inputs, full.get_layer(layer).input)
        expected = np.asarray(inner(pixels.astype("float32"), training=False)).mean(axis=(1, 2))
        got = np.asarray(net(pixels.astype("float32"), training=False))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_an_unknown_feature_layer_names_the_backbones_layers() -> None:
    from models.errors import ModelError

    with pytest.raises(ModelError, match="xception has no feature layer 'exit'; its feature"):
        get_backbone("xception").feature_dim_at("exit")
    with pytest.raises(ModelError, match="no feature layer"):
        create_model(TrialConfig("small_cnn", feature_layer="block9", fine_tune=1.0), 2, 32, "none")
    assert get_backbone("mobilenet").feature_layers == ("top",)


def test_records_are_complete() -> None:
    for record in list_backbones():
        assert record.min_size <= record.default_size
        assert record.feature_dim > 0
        assert record.preprocessing in ("tf", "torch", "none", "unit")


@pytest.mark.parametrize("name", backbone_names())
def test_every_backbone_is_made_by_its_own_factory_through_one_path(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`create_model` calls each record's factory with the one signature, our small_cnn
    included: a spy in its place sees the call (no name gets a branch of its own)."""
    from models.backend import keras_module

    keras = keras_module()
    record = get_backbone(name)
    assert list(inspect.signature(record.factory).parameters) == ["input_size", "weights"]
    calls: list[tuple[int, str | None]] = []

    def spy(input_size: int, weights: str | None) -> Any:
        calls.append((input_size, weights))
        inputs = keras.Input((input_size, input_size, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(record.feature_dim)(pooled))

    spy.__name__ = record.constructor
    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(record, factory=spy))
    model = create_model(TrialConfig(name, head_depth=0, fine_tune=1.0), 2, record.min_size)
    assert calls == [(record.min_size, None)]
    assert model.get_layer("backbone").output.shape[-1] == record.feature_dim


def test_registering_a_duplicate_name_raises() -> None:
    before = list(REGISTRY.items())
    small_cnn = get_backbone("small_cnn")
    with pytest.raises(ValueError, match="'mobilenet' is already registered"):
        register(dataclasses.replace(get_backbone("mobilenet"), family="other"))
    fields = {k: v for k, v in small_cnn.to_dict().items() if k != "constructor"}
    with pytest.raises(ValueError, match="'small_cnn' is already registered"):
        register_backbone(**fields)(lambda input_size, weights: None)
    assert list(REGISTRY.items()) == before
    assert get_backbone("small_cnn").factory is small_cnn.factory


def test_registry_lists_backbones_without_importing_keras() -> None:
    """Configs are validated and `backbones` answers without Keras: factories import it."""
    code = (
        "import sys; from models.registry import list_backbones; "
        "assert [r.to_dict() for r in list_backbones()]; "
        "sys.exit(3 if 'keras' in sys.modules or 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
