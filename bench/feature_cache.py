"""feature_cache_speedup: a frozen-backbone trial trained end to end, divided by the same
trial on a warm feature cache (EfficientNetB0 frozen, weights loaded from a file, 400
phantom images at 128 px, 10 epochs)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from unittest import mock

from bench.harness import note, phantoms, report, write_yaml


def run(workdir: Path) -> float:
    from models.backend import keras_module
    from models.builder import build_backbone
    from models.registry import get_backbone
    from models.trial_config import TrialConfig
    from models.weights import WeightsPolicy
    from search.config import load_config
    from search.study_data import load_train_val, prepare
    from search.training.callbacks import EpochRecorder
    from search.training.fit import fit

    keras = keras_module()
    data_dir = phantoms(workdir, per_class=100, size=128)
    weights = workdir / "efficientnet_b0.weights.h5"
    if not weights.exists():
        keras.utils.set_random_seed(0)
        build_backbone(get_backbone("efficientnet_b0"), 128, WeightsPolicy("none")).save_weights(
            weights
        )
        keras.backend.clear_session()
    trial = TrialConfig(
        "efficientnet_b0",
        head_depth=1,
        head_width=128,
        dropout=0.2,
        learning_rate=1e-3,
        fine_tune=0.0,
    )
    base = {
        "name": "bench-cache",
        "trials": 1,
        "weights": str(weights),
        "data": {
            "path": str(data_dir),
            "split": "pooled",
            "seed": 0,
            "val_fraction": 0.15,
            "test_fraction": 0.15,
            "image_size": 128,
        },
        "space": {"backbone": ["efficientnet_b0"], "fine_tune": [0.0]},
    }

    def config(cache: bool):  # noqa: ANN202
        training = {"epochs": 10, "early_stopping_patience": 0, "feature_cache": cache}
        return load_config(
            str(write_yaml(workdir / f"cache-{cache}.yaml", {**base, "training": training}))
        )

    arrays = load_train_val(prepare(config(True)), 128)
    note(
        f"feature cache: {len(arrays.y_train)} train / {len(arrays.y_val)} val images at 128 px, 10 epochs"
    )

    def trial_seconds(cache: bool) -> tuple[float, dict]:
        start = time.perf_counter()
        result = fit(trial, config(cache), arrays, EpochRecorder("[bench]", 10), need_model=False)
        seconds = time.perf_counter() - start
        keras.backend.clear_session()
        return seconds, result.feature_cache

    end_to_end, _ = trial_seconds(cache=False)
    with (
        tempfile.TemporaryDirectory(dir=workdir, prefix="feature-cache-") as fresh,
        mock.patch.dict(os.environ, {"TUMOR_SEARCH_CACHE": fresh}),  # a kept --workdir is warm
    ):
        cold, info = trial_seconds(cache=True)
        warm, info_warm = trial_seconds(cache=True)
    assert info["hit"] is False, "the cold run should compute the features"
    assert info_warm["hit"] is True, "the warm run should load them from the cache"
    speedup = end_to_end / warm
    report(
        "feature_cache_speedup",
        speedup,
        end_to_end_s=f"{end_to_end:.1f}",
        cold_cache_s=f"{cold:.1f}",
        warm_cache_s=f"{warm:.2f}",
        target=">= 10",
    )
    return speedup
