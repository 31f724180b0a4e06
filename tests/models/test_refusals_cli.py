"""Every refusal of the models issue reaches the user as one line and exit code 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import assert_bad_input, run_cli
from tests.search.helpers import expected_device, write_config


@pytest.mark.backends
def test_backbones_json_lists_all_fifteen_and_the_backend() -> None:
    result = run_cli("backbones", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["backend"] == os.environ.get("KERAS_BACKEND", "tensorflow")
    assert listing["device"] == expected_device()
    rows = listing["backbones"]
    names = {row["name"] for row in rows}
    assert len(names) == 15
    for row in rows:
        assert {"name", "default_size", "min_size", "feature_dim"} <= set(row)
    text = run_cli("backbones")
    assert "efficientnet_v2_b0" in text.stdout
    assert f"backend {listing['backend']}, on {listing['device']}" in text.stdout


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"space": {"backbone": ["resnet9000"]}}, ["unknown backbone", "small_cnn"]),
        ({"space": {"backbone": ["inception_v3"]}}, ["minimum input size of 75"]),
        ({"space": {"fine_tune": [0.0]}}, ["constant features"]),
        ({"weights": "/nonexistent/backbone.weights.h5"}, ["weights file not found"]),
    ],
)
def test_study_create_refuses_bad_model_settings(
    tmp_path: Path, phantom_dir: Path, changes: dict, fragments: list[str]
) -> None:
    config = write_config(tmp_path / "c.yaml", **changes)
    db = tmp_path / "s.db"
    result = run_cli(
        "study",
        "create",
        "--study",
        "x",
        "--config",
        str(config),
        "--data",
        str(phantom_dir),
        "--storage",
        f"sqlite:///{db}",
    )
    assert_bad_input(result, *fragments)
    assert not db.exists()


# Downloads go to a closed loopback port (urllib, which keras' get_file uses, honours these
# variables): the ImageNet weights are unavailable whether or not this machine is online,
# and no connection leaves it.
NO_DOWNLOADS = {
    **{
        name: "http://127.0.0.1:9"
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    },
    "no_proxy": "",
    "NO_PROXY": "",
}


@pytest.mark.parametrize("download", [False, True])
def test_run_with_offline_imagenet_stops_before_creating_a_study(
    tmp_path: Path, phantom_dir: Path, download: bool
) -> None:
    """ImageNet weights in neither the weights folder nor Keras's cache stop `run` with one
    line, before any study (or database) exists: without --download-weights no download is
    tried and the line names the import command; with it, the download that fails names the
    file Keras looks for and the alternatives."""
    config = write_config(
        tmp_path / "c.yaml",
        weights="imagenet",
        space={"backbone": ["mobilenet_v3_small"], "fine_tune": [0.0]},
    )
    db = tmp_path / "s.db"
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--data",
        str(phantom_dir),
        "--storage",
        f"sqlite:///{db}",
        *(["--download-weights"] if download else []),
        env=NO_DOWNLOADS,
    )
    fragments = ["weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "'none'", "refused"]
    if not download:
        fragments = [
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "backbone(s) mobilenet_v3_small:",
            "tumor-search weights import FILE --backbone NAME",
            "--download-weights",
        ]
    assert_bad_input(result, *fragments)
    import optuna

    assert not db.exists() or optuna.get_all_study_names(f"sqlite:///{db}") == []
