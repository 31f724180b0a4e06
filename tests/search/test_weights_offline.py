"""``weights: imagenet`` offline: the weights folder first, then Keras's cache, never a
download unless asked; the study and the feature cache know the weights by their bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import optuna
import pytest

from models.backend import keras_module
from models.registry import get_backbone
from models.weights import WeightsPolicy
from models.weights_store import weights_dir
from search.training.feature_cache import cache_key
from tests.conftest import assert_bad_input, run_cli
from tests.search.helpers import write_config

keras = keras_module()
IMPORTED, MISSING = "small_cnn", "mobilenet_v3_small"


@pytest.fixture(autouse=True)
def _weights_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights-folder"
    monkeypatch.setenv("TUMOR_SEARCH_WEIGHTS", str(folder))
    # An empty Keras cache of this test's own, whatever other tests left in the session's.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return folder


def _import_random(tmp_path: Path, seed: int) -> str:
    """Import random small_cnn weights; returns the stored file's sha256."""
    keras.utils.set_random_seed(seed)
    source = tmp_path / f"small-{seed}.weights.h5"
    get_backbone(IMPORTED).factory(32, None).save_weights(source)
    keras.backend.clear_session()
    result = run_cli("weights", "import", str(source), "--backbone", IMPORTED)
    assert result.returncode == 0, result.stderr
    return hashlib.sha256((weights_dir() / f"{IMPORTED}.weights.h5").read_bytes()).hexdigest()


def _config(tmp_path: Path, backbones: list[str]) -> Path:
    return write_config(
        tmp_path / "imagenet.yaml",
        weights="imagenet",
        trials=1,
        training={"epochs": 1},
        pruner={"name": "none"},
        space={"backbone": backbones, "fine_tune": [0.0], "head_depth": 0},
    )


@pytest.mark.parametrize("command", ["study create", "run"])
def test_a_backbone_without_weights_is_refused_before_the_study_exists(
    tmp_path: Path, tiny_data: Path, command: str
) -> None:
    _import_random(tmp_path, seed=0)
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = _config(tmp_path, [IMPORTED, MISSING])
    args = ["--config", str(config), "--data", str(tiny_data), "--storage", url, "--study", "x"]
    result = run_cli(*command.split(), *args)
    assert_bad_input(
        result,
        f"backbone(s) {MISSING}:",  # the missing one alone: small_cnn has its weights
        "tumor-search weights import FILE --backbone NAME",
    )
    assert not (tmp_path / "s.db").exists() or optuna.get_all_study_names(url) == []


def test_an_imported_backbone_creates_and_runs_a_study(tmp_path: Path, tiny_data: Path) -> None:
    digest = _import_random(tmp_path, seed=1)
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = _config(tmp_path, [IMPORTED])
    common = ["--data", str(tiny_data), "--storage", url, "--study", "imp"]
    created = run_cli("study", "create", "--config", str(config), *common)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="imp", storage=url)
    assert study.user_attrs["weights"] == {IMPORTED: f"sha256:{digest}"}

    result = run_cli("run", "--config", str(config), *common)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="imp", storage=url).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]

    # Other weights imported since: a worker refuses to mix them into this study.
    other = _import_random(tmp_path, seed=2)
    assert other != digest
    refused = run_cli("worker", "-q", "--study", "imp", *common, "--trials", "1")
    assert_bad_input(refused, f"weights of backbone {IMPORTED}", "differ", "imp")


def test_feature_key_follows_the_imported_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two imports of different weights never share cached features; the weights folder's
    file wins over the one in Keras's cache."""
    from search.training import feature_cache

    keras_home = tmp_path / "keras-home-for-key"
    monkeypatch.setattr(feature_cache, "keras_home", lambda: keras_home)
    record = get_backbone(MISSING)
    cached = keras_home / "models" / (record.imagenet_filename(32) or "")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"keras download")
    imagenet = WeightsPolicy("imagenet")
    from_keras = cache_key(MISSING, imagenet, 32)
    assert from_keras is not None

    keys = []
    for seed in (3, 4):
        keras.utils.set_random_seed(seed)
        source = tmp_path / f"mv3-{seed}.weights.h5"
        net = record.factory(record.default_size, None)
        net.set_weights([np.full(w.shape, seed, "float32") for w in net.get_weights()])
        net.save_weights(source)
        keras.backend.clear_session()
        imported = run_cli("weights", "import", str(source), "--backbone", MISSING)
        assert imported.returncode == 0, imported.stderr
        keys.append(cache_key(MISSING, imagenet, 32))
    assert None not in keys and len({from_keras, *keys}) == 3
