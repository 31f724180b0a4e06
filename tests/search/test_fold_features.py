"""Folds and refits of a frozen backbone never read another arrangement's cached features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.backend import keras_module
from models.builder import build_backbone
from models.registry import get_backbone
from models.weights import WeightsPolicy, parse_weights
from search.config import load_config
from search.results.folds import group_ids, make_folds, pool_paths
from search.runtime.study_data import load_train_val, prepare
from search.training.data_subsets import pool_arrays, subset_train_val
from search.training.feature_cache import build_extractor, get_features
from search.training.refit import refit_data
from tests.search.helpers import write_config


def test_each_fold_and_the_refit_get_their_own_features(tmp_path: Path, tiny_data: Path) -> None:
    keras = keras_module()
    keras.utils.set_random_seed(5)
    backbone = build_backbone(get_backbone("mobilenet_v2"), 32, WeightsPolicy("none"))
    weights_path = tmp_path / "mobilenet_v2.weights.h5"
    backbone.save_weights(weights_path)
    keras.backend.clear_session()
    config = load_config(str(write_config(tmp_path / "c.yaml", weights=str(weights_path))))
    data = prepare(config, tiny_data)
    train_val = load_train_val(data, 32)
    x, y = pool_arrays(train_val)
    groups = group_ids(pool_paths(data.manifest), data.manifest.duplicates)
    weights = parse_weights(str(weights_path))
    extractor = build_extractor("mobilenet_v2", 32, weights)

    arrangements = [
        subset_train_val(train_val, x, y, f.train, f.held_out, f"cv{f.index + 1}of2")
        for f in make_folds(y, groups, 2, seed=1)
    ] + [refit_data(train_val)]
    prints = {a.fingerprint for a in arrangements} | {train_val.fingerprint}
    assert len(prints) == len(arrangements) + 1
    for part in arrangements:
        got = get_features("mobilenet_v2", weights, 32, part.fingerprint, part.x_train, part.x_val)
        assert not got.hit
        assert got.train.shape[0] == len(part.y_train) and got.val.shape[0] == len(part.y_val)
        expected = np.asarray(extractor(part.x_train[:4].astype("float32"), training=False))
        np.testing.assert_allclose(got.train[:4], expected, rtol=1e-4, atol=1e-5)
    again = get_features("mobilenet_v2", weights, 32, arrangements[0].fingerprint, x[:0], x[:0])
    assert again.hit and again.val.shape[0] == len(arrangements[0].y_val)
    assert len(refit_data(train_val).y_val) == 0 and len(refit_data(train_val).y_train) == len(y)
