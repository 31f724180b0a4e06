"""The TensorFlow-free predictor: `tumor-predict` and `tumor-search predict` on an .onnx
model give the same answers, the tiny graph's maths, without Keras, TensorFlow or Optuna,
and refuse bad input with one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tumor_predict.decode import decode_pixels

from tests.conftest import ROOT, CliResult, assert_bad_input, run_cli
from tests.predictor.blocked import run_without_frameworks
from tests.predictor.onnx_models import CLASSES, METADATA, SIZE, expected_probabilities, write_model


def run_predictor(*args: str, timeout: float = 120) -> CliResult:
    """`tumor-predict ARGS` in a fresh process (``python -m tumor_predict``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tumor_predict", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _rgb_image(path: Path, seed: int, size: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(size, size, 3))
    pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return path


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One image named directly, and a folder of images with junk a predictor skips."""
    base = tmp_path_factory.mktemp("images")
    folder = base / "folder"
    _rgb_image(folder / "a.png", 1)
    _rgb_image(folder / "nested" / "b.JPG", 2)
    _rgb_image(folder / "c.webp", 3, size=SIZE)
    _rgb_image(folder / ".hidden.png", 4)
    (folder / "Thumbs.db").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"not a png")  # unreadable: skipped with a line
    (base / "not-image.png").write_text("hello")
    return {"image": _rgb_image(base / "img.png", 5), "folder": folder, "base": base}


def _paths(images: dict[str, Path]) -> list[str]:
    return [str(images["image"]), str(images["folder"])]


def test_both_commands_agree_with_the_graph_maths(
    onnx_model: Path, images: dict[str, Path]
) -> None:
    ours = run_predictor("--model", str(onnx_model), *_paths(images), "--json")
    search = run_cli("predict", "--model", str(onnx_model), *_paths(images), "--json")
    assert ours.returncode == 0 and search.returncode == 0, ours.stderr + search.stderr
    assert ours.stdout == search.stdout
    assert "broken.png" in ours.stderr and "broken.png" in search.stderr  # skipped, said so
    rows = json.loads(ours.stdout)
    folder = images["folder"]
    names = [str(images["image"])] + [str(folder / n) for n in ("a.png", "c.webp")]
    assert sorted(r["path"] for r in rows) == sorted([*names, str(folder / "nested" / "b.JPG")])
    pixels = np.stack([decode_pixels(r["path"], SIZE) for r in rows])
    expected = expected_probabilities(pixels)
    got = np.array([[r["probabilities"][c] for c in CLASSES] for r in rows])
    assert np.abs(got - expected).max() < 1e-5
    assert [r["label"] for r in rows] == [CLASSES[i] for i in expected.argmax(axis=1)]
    text = run_predictor("--model", str(onnx_model), *_paths(images), "--batch-size", "2")
    search_text = run_cli("predict", "--model", str(onnx_model), *_paths(images))
    assert text.stdout == search_text.stdout
    first = text.stdout.splitlines()[0].split("\t")
    assert first[0] == rows[0]["path"] and first[1] == rows[0]["label"]
    assert first[2] == "  ".join(f"{c} {rows[0]['probabilities'][c]:.3f}" for c in CLASSES)


def test_onnx_predict_needs_no_keras_tensorflow_or_optuna(
    onnx_model: Path, images: dict[str, Path]
) -> None:
    proc = run_without_frameworks(["predict", "--model", str(onnx_model), *_paths(images)])
    assert proc.returncode == 0, proc.stderr
    assert "leaked: []" in proc.stderr
    assert len(proc.stdout.splitlines()) == 4


@pytest.fixture(scope="session")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad-models")
    (base / "text.onnx").write_text("this is not a model\n")
    return {
        "missing": base / "missing.onnx",
        "text": base / "text.onnx",
        "no_metadata": write_model(base / "plain.onnx", metadata={}),
        "no_class_names": write_model(
            base / "no-names.onnx",
            metadata={k: v for k, v in METADATA.items() if k != "class_names"},
        ),
        "channels_first": write_model(
            base / "nchw.onnx", input_shape=("batch", 3, SIZE, SIZE), mean_axes=(2, 3)
        ),
    }


BAD_MODELS = {
    "missing": "model file not found",
    "text": "not an ONNX model",
    "no_metadata": "not a classifier exported by tumor-search",
    "no_class_names": "no class_names metadata",
    "channels_first": "must have shape [batch, 24, 24, 3]",
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_file_is_one_line_and_exit_2(
    case: str, bad_models: dict[str, Path], images: dict[str, Path]
) -> None:
    model = str(bad_models[case])
    result = run_predictor("--model", model, str(images["image"]))
    assert_bad_input(result, "tumor-predict: error:", BAD_MODELS[case])
    assert_bad_input(
        run_cli("predict", "--model", model, str(images["image"])),
        "tumor-search: error:",
        BAD_MODELS[case],
    )


def test_bad_paths_and_arguments_are_one_line_and_exit_2(
    onnx_model: Path, images: dict[str, Path]
) -> None:
    not_image = str(images["base"] / "not-image.png")
    for run in (run_predictor, lambda *a: run_cli("predict", *a)):
        assert_bad_input(run("--model", str(onnx_model), not_image), "not an image", not_image)
        missing = str(images["base"] / "nowhere")
        assert_bad_input(run("--model", str(onnx_model), missing), "no such file or folder")
    assert_bad_input(
        run_cli("predict", "--model", str(images["base"] / "m.h5"), str(images["image"])),
        "must be a .keras or .onnx file",
    )
    assert_bad_input(run_predictor("--model", str(onnx_model)), "required: PATH")
    assert_bad_input(
        run_predictor("--model", str(onnx_model), "--batch-size", "0", str(images["image"])),
        "--batch-size",
    )
