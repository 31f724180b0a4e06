"""`weights import` and `weights list`: the local weights folder that ``imagenet`` loads first."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from models.backend import keras_module
from models.builder import BACKBONE_NAME, build_backbone, create_model
from models.registry import get_backbone
from models.trial_config import TrialConfig
from models.weights import WeightsPolicy
from models.weights_store import stored_weights, weights_dir
from tests.conftest import assert_bad_input, run_cli

keras = keras_module()
NAME = "small_cnn"  # builds in a fraction of a second; fully convolutional


@pytest.fixture(autouse=True)
def _weights_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights-folder"
    monkeypatch.setenv("TUMOR_SEARCH_WEIGHTS", str(folder))
    return folder


def _arrays(model: object) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]  # type: ignore[attr-defined]


def _stored_arrays(name: str) -> list[np.ndarray]:
    """The weights folder's file loaded into a fresh registry backbone."""
    record = get_backbone(name)
    fresh = record.factory(record.default_size, None)
    path = stored_weights(name)
    assert path is not None
    fresh.load_weights(str(path))
    return _arrays(fresh)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _saved_transfer_model(path: Path, seed: int) -> list[np.ndarray]:
    """A project model (small_cnn nested as `backbone`, a small head) saved as .keras, with
    its backbone given random non-default weights; returns the backbone's weights."""
    keras.utils.set_random_seed(seed)
    model = create_model(TrialConfig(NAME, head_depth=1, head_width=8, fine_tune=1.0), 3, 32)
    backbone = model.get_layer(BACKBONE_NAME)
    rng = np.random.default_rng(seed)
    # Batch-norm statistics too, so that a loader that dropped them would be caught.
    backbone.set_weights([rng.normal(size=w.shape).astype("float32") for w in _arrays(backbone)])
    model.save(path)
    return _arrays(backbone)


def _import(source: Path, name: str = NAME):  # noqa: ANN202
    return run_cli("weights", "import", str(source), "--backbone", name)


def test_import_from_a_saved_model_stores_its_nested_backbone(tmp_path: Path) -> None:
    source = tmp_path / "trained.keras"
    expected = _saved_transfer_model(source, seed=3)
    result = _import(source)
    assert result.returncode == 0, result.stderr
    path = weights_dir() / f"{NAME}.weights.h5"
    assert stored_weights(NAME) == path
    assert _same(_stored_arrays(NAME), expected)
    record = json.loads((weights_dir() / f"{NAME}.json").read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["weights_sha256"] == digest and f"sha256:{digest}" in result.stdout
    assert record["source"] == str(source.resolve())
    assert record["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["found_in"] == BACKBONE_NAME
    assert record["parameters"] == sum(int(np.prod(a.shape)) for a in expected)
    assert record["keras"] == keras.__version__ and record["imported_at"][:2] == "20"
    assert not [p for p in weights_dir().iterdir() if p.name.startswith(".")]  # no temp left


def test_import_finds_a_backbone_nested_two_levels_down(tmp_path: Path) -> None:
    """Keras applications nest as a layer that is a Model; the search goes down recursively."""
    keras.utils.set_random_seed(5)
    inner = create_model(TrialConfig(NAME, head_depth=0, fine_tune=1.0), 3, 32, compile=False)
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, name="outer_head")(inner(inputs))
    outer = keras.Model(inputs, outputs, name="outer")
    source = tmp_path / "outer.keras"
    outer.save(source)
    expected = _arrays(inner.get_layer(BACKBONE_NAME))
    assert _import(source).returncode == 0
    assert _same(_stored_arrays(NAME), expected)


def test_import_of_a_weights_file_and_a_notop_h5_download(tmp_path: Path) -> None:
    keras.utils.set_random_seed(7)
    net = get_backbone(NAME).factory(64, None)
    plain = tmp_path / "small.weights.h5"
    net.save_weights(plain)
    assert _import(plain).returncode == 0
    assert _same(_stored_arrays(NAME), _arrays(net))
    first = json.loads((weights_dir() / f"{NAME}.json").read_text())

    # The legacy layout of Keras's own *_notop.h5 downloads (layer_names, one group a layer).
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(8)
    other = get_backbone(NAME).factory(32, None)
    notop = tmp_path / "small_cnn_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(notop, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, other)
    assert _import(notop).returncode == 0
    assert _same(_stored_arrays(NAME), _arrays(other))  # a second import replaces both
    second = json.loads((weights_dir() / f"{NAME}.json").read_text())
    assert second["source"] == str(notop) and second["weights_sha256"] != first["weights_sha256"]


def test_wrong_backbone_is_refused_with_what_differs(tmp_path: Path) -> None:
    source = tmp_path / "trained.keras"
    _saved_transfer_model(source, seed=1)
    result = _import(source, "mobilenet_v3_small")
    # small_cnn: 4 conv + 4 batch-norm layers with 20 weights.
    assert_bad_input(result, "mobilenet_v3_small", "8 layers with 20 weights", "'backbone'")

    plain = tmp_path / "small.weights.h5"
    get_backbone(NAME).factory(32, None).save_weights(plain)
    assert_bad_input(_import(plain, "mobilenet_v3_small"), "does not hold mobilenet_v3_small")
    assert not weights_dir().exists() or not list(weights_dir().iterdir())


def test_same_layers_with_other_shapes_name_the_first_differing_weight(tmp_path: Path) -> None:
    """A network laid out like small_cnn but narrower: the first differing shape is named."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, filters in enumerate((8, 32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"b{i}")(x)
        x = keras.layers.MaxPooling2D()(x)
    narrow = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="narrow")
    outer_in = keras.Input((32, 32, 3))
    outer = keras.Model(outer_in, keras.layers.Dense(2)(narrow(outer_in)))
    source = tmp_path / "narrow.keras"
    outer.save(source)
    assert_bad_input(_import(source), "weight 0", "(3, 3, 3, 16) in small_cnn", "(3, 3, 3, 8)")


def test_missing_or_foreign_source_is_refused(tmp_path: Path) -> None:
    assert_bad_input(_import(tmp_path / "nope.keras"), "not found", "nope.keras")
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    assert_bad_input(_import(text), "notes.txt", ".weights.h5")
    fake = tmp_path / "fake.h5"
    fake.write_text("not hdf5")
    assert_bad_input(_import(fake), "fake.h5", "not an HDF5 file")
    assert_bad_input(_import(fake, "no_such_net"), "unknown backbone", "small_cnn")


def test_list_shows_imported_weights_and_keras_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Keras home of this test's own: the session's must not gain a stand-in download.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    plain = tmp_path / "small.weights.h5"
    get_backbone(NAME).factory(32, None).save_weights(plain)
    assert _import(plain).returncode == 0
    record = get_backbone("mobilenet_v3_small")
    cached = Path(os.environ["KERAS_HOME"]) / "models" / record.imagenet_filename(224)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"stand-in for the Keras download")

    result = run_cli("weights", "list", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    rows = {row["backbone"]: row for row in listing["backbones"]}
    assert set(rows) >= {"small_cnn", "mobilenet_v3_small", "xception"}
    ours = rows[NAME]["weights"]
    path = weights_dir() / f"{NAME}.weights.h5"
    assert ours["path"] == str(path)
    assert ours["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ours["provenance"]["source"] == str(plain.resolve())
    assert rows["mobilenet_v3_small"] == {
        "backbone": "mobilenet_v3_small",
        "weights": None,
        "keras_cache": [str(cached)],
    }
    assert rows["xception"]["weights"] is None and rows["xception"]["keras_cache"] == []

    text = run_cli("weights", "list")
    assert text.returncode == 0
    assert f"sha256:{ours['sha256'][:12]}" in text.stdout and str(weights_dir()) in text.stdout


def test_default_folder_is_under_the_cache_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from data.cache import cache_root

    monkeypatch.delenv("TUMOR_SEARCH_WEIGHTS")
    assert weights_dir() == cache_root() / "weights"


def test_imagenet_builds_from_the_weights_folder_without_keras(tmp_path: Path) -> None:
    """With the backbone imported, ``imagenet`` builds with weights None and loads the
    folder's file: the factory is never asked for ImageNet weights (no download)."""
    source = tmp_path / "trained.keras"
    expected = _saved_transfer_model(source, seed=9)
    assert _import(source).returncode == 0
    record = get_backbone(NAME)
    asked: list[str | None] = []
    factory = record.factory

    def recording(size: int, weights: str | None) -> object:
        asked.append(weights)
        return factory(size, weights)

    net = build_backbone(
        dataclasses.replace(record, factory=recording), 32, WeightsPolicy("imagenet")
    )
    assert asked == [None]
    assert _same(_arrays(net), expected)
