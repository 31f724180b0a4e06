"""The feature cache: trained on cached features, the whole model predicts the same; two
processes asking for the same features compute them once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.backend import keras_module
from models.builder import build_backbone
from models.registry import get_backbone
from models.trial_config import TrialConfig
from models.weights import WeightsPolicy
from search.config import load_config
from search.study_data import load_train_val, prepare
from search.training.callbacks import EpochRecorder
from search.training.fit import fit, uses_feature_cache
from tests.conftest import ROOT
from tests.search.helpers import write_config

keras = keras_module()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenet_v2 weights made here (offline, ImageNet cannot be fetched)."""
    keras.utils.set_random_seed(5)
    backbone = build_backbone(get_backbone("mobilenet_v2"), 32, WeightsPolicy("none"))
    path = tmp_path_factory.mktemp("w") / "mobilenet_v2.weights.h5"
    backbone.save_weights(path)
    keras.backend.clear_session()
    return path


def _frozen_config(tmp_path: Path, data: Path, weights: Path, cache: bool = True):  # noqa: ANN202
    path = write_config(
        tmp_path / f"frozen-{cache}.yaml",
        weights=str(weights),
        space={
            "backbone": ["mobilenet_v2"],
            "fine_tune": [0.0],
            "head_depth": [1],
            "head_width": [16],
        },
        training={"epochs": 3, "early_stopping_patience": 0, "feature_cache": cache},
    )
    return load_config(str(path)).with_overrides(data_path=str(data))


@pytest.mark.backends
def test_head_trained_on_cached_features_predicts_like_the_whole_model(
    tmp_path: Path, tiny_data: Path, weights_file: Path
) -> None:
    config = _frozen_config(tmp_path, tiny_data, weights_file)
    trial_config = TrialConfig(
        "mobilenet_v2", head_depth=1, head_width=16, fine_tune=0.0, learning_rate=1e-2
    )
    assert uses_feature_cache(trial_config, config)
    data = load_train_val(prepare(config), 32)
    first = fit(trial_config, config, data, EpochRecorder("[t]", 3))
    assert first.feature_cache["hit"] is False and first.head is not None
    from search.training.feature_cache import get_features

    features = get_features("mobilenet_v2", config.weights_policy(), 32, data.x_train, data.x_val)
    assert features.hit
    end_to_end = first.model.predict(data.x_val.astype("float32"), verbose=0)
    from_cache = first.head.predict(features.val, verbose=0)
    np.testing.assert_allclose(end_to_end, from_cache, atol=1e-5)
    assert first.params["total"] == first.model.count_params()
    second = fit(trial_config, config, data, EpochRecorder("[t]", 3), need_model=False)
    assert second.feature_cache["hit"] is True and second.model is None
    # A trial's footprint without its whole model: the extractor's plus the head's.
    from models.footprint import measure
    from search.runtime.objective import trial_footprint

    whole = measure(first.model, 32, calls=3)
    parts = trial_footprint(second, trial_config, config, 32)
    assert parts.params_m == pytest.approx(whole.params_m, abs=1e-6)
    assert parts.size_mb == pytest.approx(whole.size_mb, abs=1e-4)
    assert parts.latency_ms > 0


def test_cache_is_skipped_when_switched_off_or_fine_tuning(
    tmp_path: Path, tiny_data: Path, weights_file: Path
) -> None:
    config = _frozen_config(tmp_path, tiny_data, weights_file, cache=False)
    assert not uses_feature_cache(TrialConfig("mobilenet_v2", fine_tune=0.0), config)
    on = _frozen_config(tmp_path, tiny_data, weights_file)
    assert not uses_feature_cache(TrialConfig("mobilenet_v2", fine_tune=0.5), on)


@pytest.mark.backends
def test_trials_record_cache_hits(
    tmp_path: Path, tiny_data: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    from search.runtime.study import create_study
    from search.runtime.worker import run_worker
    from search.training import feature_cache
    from search.training import fit as fit_module

    monkeypatch.setenv("TUMOR_SEARCH_CACHE", str(tmp_path / "cache"))  # the first trial computes
    built = {"extractor": 0, "whole model": 0}

    def counted(name: str, real):  # noqa: ANN001, ANN202 - a spy: the real function runs
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            built[name] += 1
            return real(*args, **kwargs)

        return call

    from search.runtime import objective

    monkeypatch.setattr(objective, "_EXTRACTORS", {})  # as a new worker process starts
    extractor = counted("extractor", feature_cache.build_extractor)
    monkeypatch.setattr(feature_cache, "build_extractor", extractor)
    monkeypatch.setattr(fit_module, "create_model", counted("whole model", fit_module.create_model))
    config = _frozen_config(tmp_path, tiny_data, weights_file).with_overrides(trials=2)
    storage = f"sqlite:///{tmp_path / 'fc.db'}"
    create_study("cached", storage, config, prepare(config))
    report = run_worker("cached", storage)
    assert report.completed == 2
    trials = optuna.load_study(study_name="cached", storage=storage).trials
    records = [t.user_attrs["feature_cache"] for t in trials]
    assert [r["hit"] for r in records] == [False, True]
    assert records[1]["seconds"] < records[0]["seconds"]  # loading beats computing
    # Heads on cached features: the whole model is never built, the extractor once for the
    # features and once for the footprint, which both trials record.
    assert built == {"extractor": 2, "whole model": 0}
    for trial in trials:
        assert trial.user_attrs["params_m"] == pytest.approx(trial.user_attrs["params"] / 1e6)
        assert trial.user_attrs["latency_ms"] > 0
        # Where its time went (bench/trial_overhead.py reads it): within its stored wall.
        phases = trial.user_attrs["phase_seconds"]
        assert {"before", "setup", "epochs", "footprint", "figures"} <= set(phases)
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        assert 0 < sum(v for k, v in phases.items() if k != "compile") <= wall


SCRIPT = """
import hashlib, json, sys
import numpy as np
from models.weights import parse_weights
from search.training.feature_cache import get_features
rng = np.random.default_rng(0)
x_train = rng.integers(0, 256, size=(96, 32, 32, 3), dtype=np.uint8)
x_val = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
f = get_features("mobilenet_v2", parse_weights(sys.argv[1]), 32, x_train, x_val)
print(json.dumps({"hit": f.hit, "train": hashlib.sha256(f.train.tobytes()).hexdigest()}))
"""


def test_two_processes_compute_the_same_features_once(tmp_path: Path, weights_file: Path) -> None:
    env_cache = tmp_path / "shared-cache"
    import os

    env = dict(os.environ, TUMOR_SEARCH_CACHE=str(env_cache))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(weights_file)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["train"] == results[1]["train"]
    entries = list((env_cache / "features").iterdir())
    assert len(entries) == 1
    assert sorted(p.name for p in entries[0].iterdir() if not p.name.endswith(".lock")) == [
        "features.npz",
        "meta.json",
    ]


@pytest.fixture(scope="module")
def small_cnn_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn weights made here: unlike a random MobileNetV2's, its features differ
    from image to image, so a head that predicts from the wrong ones is caught."""
    keras.utils.set_random_seed(7)
    backbone = build_backbone(get_backbone("small_cnn"), 32, WeightsPolicy("none"))
    path = tmp_path_factory.mktemp("w") / "small_cnn.weights.h5"
    backbone.save_weights(path)
    keras.backend.clear_session()
    return path


@pytest.mark.parametrize(("layer", "batchnorm"), [("top", False), ("block3", True)])
def test_a_head_on_a_cut_predicts_like_the_whole_cut_model(
    tmp_path: Path,
    tiny_data: Path,
    small_cnn_weights: Path,
    layer: str,
    batchnorm: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from search.training.feature_cache import get_features

    monkeypatch.setenv("TUMOR_SEARCH_CACHE", str(tmp_path / "cache"))
    path = write_config(
        tmp_path / "cut.yaml",
        weights=str(small_cnn_weights),
        space={"backbone": ["small_cnn"], "fine_tune": [0.0], "feature_layer": [layer]},
        training={"epochs": 2, "early_stopping_patience": 0},
    )
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    trial_config = TrialConfig(
        "small_cnn",
        head_depth=1,
        head_width=16,
        fine_tune=0.0,
        learning_rate=1e-2,
        feature_layer=layer,
        feature_batchnorm=batchnorm,
    )
    data = load_train_val(prepare(config), 32)
    result = fit(trial_config, config, data, EpochRecorder("[t]", 2))
    assert result.head is not None
    width = get_backbone("small_cnn").feature_dim_at(layer)
    assert result.head.inputs[0].shape[-1] == width
    assert result.model.get_layer("backbone").output.shape[-1] == width
    assert ("feature_bn" in [x.name for x in result.head.layers]) is batchnorm
    features = get_features(
        "small_cnn",
        config.weights_policy(),
        32,
        data.x_train,
        data.x_val,
        feature_layer=layer,
    )
    assert features.hit and features.val.std(axis=0).max() > 1e-3
    end_to_end = result.model.predict(data.x_val.astype("float32"), verbose=0)
    np.testing.assert_allclose(end_to_end, result.head.predict(features.val, verbose=0), atol=1e-5)
    assert end_to_end.std(axis=0).max() > 1e-3  # predictions that differ by image
    logits = result.val_logits(data.x_val, 8)
    np.testing.assert_allclose(
        np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), end_to_end, atol=1e-5
    )
