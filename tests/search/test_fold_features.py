"""Features are cached per image: folds and the refit of a frozen backbone reuse what the
run computed, and an image whose pixels differ is computed anew."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.backend import keras_module
from models.builder import build_backbone
from models.registry import get_backbone
from models.weights import WeightsPolicy, parse_weights
from search.config import load_config
from search.results.folds import group_ids, make_folds, pool_paths
from search.study_data import load_train_val, prepare
from search.training.data_subsets import pool_arrays, subset_train_val
from search.training.feature_cache import build_extractor, get_features, image_ids
from search.training.refit import refit_data
from tests.search.helpers import write_config


@pytest.fixture
def weights(tmp_path: Path) -> WeightsPolicy:
    keras = keras_module()
    keras.utils.set_random_seed(5)
    backbone = build_backbone(get_backbone("small_cnn"), 32, WeightsPolicy("none"))
    path = tmp_path / "small_cnn.weights.h5"
    backbone.save_weights(path)
    keras.backend.clear_session()
    return parse_weights(str(path))


def test_folds_and_the_refit_reuse_the_runs_features(
    tmp_path: Path, tiny_data: Path, weights: WeightsPolicy
) -> None:
    cache = str(tmp_path / "cache")
    config = load_config(str(write_config(tmp_path / "c.yaml", weights=str(weights.path))))
    data = prepare(config, tiny_data)
    train_val = load_train_val(data, 32)
    run = get_features("small_cnn", weights, 32, train_val.x_train, train_val.x_val, cache)
    assert not run.hit and run.computed == len(train_val.y_train) + len(train_val.y_val)
    spread = np.abs(run.train[1:] - run.train[:-1]).max(axis=1)
    assert spread.min() > 1e-3 * np.abs(run.train).max()  # every image its own features

    x, y = pool_arrays(train_val)
    groups = group_ids(pool_paths(data.manifest), data.manifest.duplicates)
    arrangements = [
        subset_train_val(train_val, x, y, f.train, f.held_out, f"cv{f.index + 1}of2")
        for f in make_folds(y, groups, 2, seed=1)
    ] + [refit_data(train_val)]
    extractor = build_extractor("small_cnn", 32, weights)
    for part in arrangements:
        got = get_features("small_cnn", weights, 32, part.x_train, part.x_val, cache)
        assert got.hit and got.computed == 0
        assert got.train.shape[0] == len(part.y_train) and got.val.shape[0] == len(part.y_val)
        for pixels, features in ((part.x_train, got.train), (part.x_val, got.val)):
            if len(pixels):  # each row is the features of that row's image, not another's
                expected = np.asarray(extractor(pixels[-5:].astype("float32"), training=False))
                np.testing.assert_allclose(features[-5:], expected, rtol=1e-4, atol=1e-6)


def test_an_image_with_other_pixels_is_computed_and_the_rest_reused(
    tmp_path: Path, weights: WeightsPolicy
) -> None:
    cache = str(tmp_path / "cache")
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    x_val = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    first = get_features("small_cnn", weights, 32, x_train, x_val, cache)
    assert first.computed == 16
    changed = x_train.copy()
    changed[3, 0, 0, 0] ^= 1  # one pixel of one image, as another decoder might give
    again = get_features("small_cnn", weights, 32, changed, x_val[:0], cache)
    assert not again.hit and again.computed == 1
    np.testing.assert_array_equal(np.delete(again.train, 3, 0), np.delete(first.train, 3, 0))
    repeated = np.concatenate([x_train[:2], x_train[:2]])  # an image asked for twice
    both = get_features("small_cnn", weights, 32, repeated, x_val, cache)
    assert both.hit and both.computed == 0
    np.testing.assert_array_equal(both.train[2:], first.train[:2])


def test_image_ids_follow_the_pixels_and_are_hashed_once_per_array() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    ids = image_ids(x)
    assert ids.shape == (5, 16) and len({row.tobytes() for row in ids}) == 5
    assert image_ids(x) is ids  # the same array: not hashed again
    np.testing.assert_array_equal(image_ids(x.copy()), ids)  # same pixels, same ids
    assert image_ids(x.astype(np.float32))[0].tobytes() != ids[0].tobytes()  # dtype counts
