"""The feature cache key holds everything that decides the features.

Each component test changes one thing (backbone record, weights bytes, Keras version,
backend and its version, dtype policy, the code's version `FEATURES_VERSION`) and shows the key moves, so the cache
misses instead of serving features made another way. A real run shows that rewriting the
weights file misses through `get_features`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.backend import keras_module
from models.builder import build_backbone
from models.registry import REGISTRY, get_backbone
from models.weights import WeightsPolicy
from search.training import feature_cache
from search.training.feature_cache import FEATURES_VERSION, cache_key, entry_dir, get_features

keras = keras_module()
BACKBONE, SIZE = "mobilenet_v2", 32


@pytest.fixture
def weights_path(tmp_path: Path) -> Path:
    path = tmp_path / "backbone.weights.h5"
    path.write_bytes(b"first weights")
    return path


@dataclasses.dataclass
class Case:
    """The key's inputs; a component change edits these or the process around them."""

    backbone: str
    weights: WeightsPolicy
    size: int

    def key(self) -> str | None:
        return cache_key(self.backbone, self.weights, self.size)


def _dtype_policy(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    keras.mixed_precision.set_dtype_policy("mixed_float16")  # the test restores it


def _weights_bytes(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    assert case.weights.path is not None
    case.weights.path.write_bytes(b"other weights")


def _backend(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    real_backend, real_version = keras.backend.backend(), feature_cache._library_version
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    # The same version string for the other backend: only the backend's name changes.
    monkeypatch.setattr(feature_cache, "_library_version", lambda name: real_version(real_backend))


def _registry(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    record = get_backbone(case.backbone)
    monkeypatch.setitem(REGISTRY, case.backbone, dataclasses.replace(record, preprocessing="torch"))


COMPONENTS: dict[str, Callable[[Case, pytest.MonkeyPatch], None]] = {
    "backbone": lambda case, mp: setattr(case, "backbone", "mobilenet"),
    "image_size": lambda case, mp: setattr(case, "size", 48),
    "weights_kind": lambda case, mp: setattr(case, "weights", WeightsPolicy("none")),
    "weights_file_bytes": _weights_bytes,
    "registry_record": _registry,
    "keras_version": lambda case, mp: mp.setattr(keras, "__version__", "9.9.9"),
    "keras_backend": _backend,
    "backend_version": lambda case, mp: mp.setattr(feature_cache, "_library_version", str.upper),
    "dtype_policy": _dtype_policy,
    "code_version": lambda case, mp: mp.setattr(
        feature_cache, "FEATURES_VERSION", FEATURES_VERSION + 1
    ),
}


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_changed_component_changes_the_feature_key(
    component: str, weights_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = Case(BACKBONE, WeightsPolicy("file", weights_path), SIZE)
    before = case.key()
    assert before is not None and case.key() == before  # stable while nothing changes
    policy = keras.mixed_precision.dtype_policy()
    try:
        COMPONENTS[component](case, monkeypatch)
        after = case.key()
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    assert after is not None and after != before


def test_imagenet_is_keyed_by_the_bytes_keras_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keras-home").mkdir()  # Keras makes its home when imported
    monkeypatch.setattr(feature_cache, "keras_home", lambda: tmp_path / "keras-home")
    imagenet = WeightsPolicy("imagenet")
    assert cache_key(BACKBONE, imagenet, SIZE) is None  # no file: never keyed by name
    path = feature_cache.imagenet_weights_file(get_backbone(BACKBONE), SIZE)
    assert path == tmp_path / "keras-home" / "models" / get_backbone(BACKBONE).imagenet_filename(
        SIZE
    )
    path.parent.mkdir(parents=True)
    path.write_bytes(b"imagenet release 1")
    first = cache_key(BACKBONE, imagenet, SIZE)
    path.write_bytes(b"imagenet release 2")
    second = cache_key(BACKBONE, imagenet, SIZE)
    assert first is not None and second is not None and first != second
    assert first != cache_key(BACKBONE, WeightsPolicy("file", path), SIZE)


def _save_small_cnn(path: Path, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    build_backbone(get_backbone("small_cnn"), 32, WeightsPolicy("none")).save_weights(path)
    keras.backend.clear_session()


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8),
    )


def test_rewritten_weights_file_misses_through_get_features(
    tmp_path: Path, images: tuple[np.ndarray, np.ndarray]
) -> None:
    path = tmp_path / "small_cnn.weights.h5"
    _save_small_cnn(path, seed=1)
    weights, cache = WeightsPolicy("file", path), str(tmp_path / "cache")
    first = get_features("small_cnn", weights, 32, *images, cache_dir=cache)
    again = get_features("small_cnn", weights, 32, *images, cache_dir=cache)
    assert not first.hit and again.hit
    np.testing.assert_array_equal(first.train, again.train)
    _save_small_cnn(path, seed=2)  # same file name, new bytes
    second = get_features("small_cnn", weights, 32, *images, cache_dir=cache)
    assert not second.hit
    assert not np.allclose(first.train, second.train)
    key = cache_key("small_cnn", weights, 32)
    assert key is not None
    meta = json.loads((entry_dir(key, cache) / "meta.json").read_text())
    assert meta["weights"].startswith("file:sha256:") and meta["code"] == FEATURES_VERSION


def test_weights_rewritten_while_loading_are_loaded_again(
    tmp_path: Path, images: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, newer = tmp_path / "small_cnn.weights.h5", tmp_path / "newer.weights.h5"
    _save_small_cnn(path, seed=1)
    _save_small_cnn(newer, seed=2)
    expected = get_features(
        "small_cnn", WeightsPolicy("file", newer), 32, *images, cache_dir=str(tmp_path / "x")
    )
    real_build = feature_cache.build_extractor
    builds: list[int] = []

    def build_then_replace(*args: Any) -> Any:
        extractor = real_build(*args)  # loaded the old bytes...
        if not builds:
            path.write_bytes(newer.read_bytes())  # ...which another process replaces now
        builds.append(1)
        return extractor

    monkeypatch.setattr(feature_cache, "build_extractor", build_then_replace)
    weights = WeightsPolicy("file", path)
    got = get_features("small_cnn", weights, 32, *images, cache_dir=str(tmp_path / "c"))
    assert len(builds) == 2 and not got.hit
    np.testing.assert_allclose(got.train, expected.train, rtol=1e-5, atol=1e-6)
