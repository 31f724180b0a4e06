"""`tumor-search explain`, train-best's Grad-CAM examples and the report panel that shows
them."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from tests.conftest import assert_bad_input, run_cli

SIZE = 32
CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


@pytest.fixture(scope="module")
def phantoms(tiny_data: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """The tiny phantom set's test images, decoded as predict and explain decode them."""
    from data.decode import decode_image
    from data.synth import KAGGLE_FOLDERS

    paths = [
        p for folder in KAGGLE_FOLDERS for p in sorted((tiny_data / "Testing" / folder).iterdir())
    ]
    x = np.stack([decode_image(p, SIZE) for p in paths])
    y = np.asarray([KAGGLE_FOLDERS.index(p.parent.name) for p in paths])
    return x, y, paths


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A small_cnn trained for 2 epochs on the tiny phantoms' training images, saved."""
    from data.decode import decode_image
    from data.synth import KAGGLE_FOLDERS
    from models.backend import keras_module
    from models.builder import create_model, encode_targets
    from models.trial_config import TrialConfig

    paths = [p for f in KAGGLE_FOLDERS for p in sorted((tiny_data / "Training" / f).iterdir())]
    x = np.stack([decode_image(p, SIZE) for p in paths]).astype("float32")
    y = np.asarray([KAGGLE_FOLDERS.index(p.parent.name) for p in paths])
    keras_module().utils.set_random_seed(0)
    config = TrialConfig("small_cnn", head_depth=0, fine_tune=1.0, learning_rate=3e-3)
    model = create_model(config, 4, SIZE, "none", class_names=CLASSES)
    model.fit(x, encode_targets(y, 4, config), epochs=2, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("explain-model") / "model.keras"
    model.save(path)
    return path


def test_explain_writes_one_titled_overlay_per_image(
    saved_model: Path, tiny_data: Path, tmp_path: Path
) -> None:
    # Kaggle names repeat across class folders: three images called "image(1).jpg".
    folders = ("glioma_tumor", "meningioma_tumor", "no_tumor")
    images = [tiny_data / "Testing" / f / "image(1).jpg" for f in folders]
    out = tmp_path / "overlays" / "new"
    result = run_cli("explain", "--model", str(saved_model), *map(str, images), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert len(list(out.iterdir())) == 3
    from data.decode import decode_image
    from search.results.predict import load_model

    model = load_model(saved_model)
    probs = model.predict(np.stack([decode_image(p, SIZE) for p in images]), verbose=0)
    for line, image, row in zip(lines, images, probs, strict=True):
        path, label, probability, overlay = line.split("\t")
        assert path == str(image)
        assert label == CLASSES[int(row.argmax())]  # what predict says
        assert float(probability) == pytest.approx(float(row.max()), abs=1e-3)
        assert Path(overlay).parent == out
        with Image.open(overlay) as png:
            assert png.format == "PNG" and png.size == (256, 256 + 22)
            title_band = np.asarray(png.convert("L"))[:22]
        assert (title_band > 200).sum() > 20  # the title was drawn
    assert sorted(p.name for p in out.iterdir()) == [f"{f}_image(1).gradcam.png" for f in folders]


def test_a_non_image_is_bad_input_and_leaves_no_overlay(
    saved_model: Path, tiny_data: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    good = tiny_data / "Testing" / "glioma_tumor" / "image(1).jpg"
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(
        "explain", "--model", str(saved_model), str(good), str(notes), "--out", str(out)
    )
    assert_bad_input(result, "not an image", "notes.jpg")
    assert list(out.iterdir()) == []
    missing = run_cli(
        "explain", "--model", str(tmp_path / "no.keras"), str(good), "--out", str(out)
    )
    assert_bad_input(missing, "model file not found")
    assert list(out.iterdir()) == []


@pytest.mark.slow  # other backends, in processes of their own
def test_explain_works_on_the_other_installed_backends(
    saved_model: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """A model saved under TensorFlow is explained under JAX and PyTorch (their own
    autodiff), with the same predicted class and an overlay per image."""
    import importlib.util

    good = tiny_data / "Testing" / "glioma_tumor" / "image(1).jpg"
    lines = {}
    for backend in ("tensorflow", "jax", "torch"):
        if importlib.util.find_spec(backend) is None:
            continue
        out = tmp_path / backend
        result = run_cli(
            "explain",
            "--model",
            str(saved_model),
            str(good),
            "--out",
            str(out),
            env={"KERAS_BACKEND": backend},
        )
        assert result.returncode == 0, (backend, result.stderr)
        assert len(list(out.glob("*.png"))) == 1, backend
        lines[backend] = result.stdout.split("\t")[1]  # the predicted class
    assert len(lines) >= 2 and len(set(lines.values())) == 1, lines


def test_write_examples_picks_a_right_and_a_wrong_image_per_class(
    saved_model: Path, phantoms: tuple[np.ndarray, np.ndarray, list[Path]], tmp_path: Path
) -> None:
    from search.results.explain import write_examples
    from search.results.predict import load_model

    x, y, paths = phantoms
    model = load_model(saved_model)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    records = write_examples(model, x, y, [str(p) for p in paths], CLASSES, tmp_path)
    expected = {
        (name, kind)
        for c, name in enumerate(CLASSES)
        for kind, hit in (("correct", predicted == c), ("wrong", predicted != c))
        if ((y == c) & hit).any()
    }
    assert {(r["class"], r["kind"]) for r in records} == expected
    assert {r["kind"] for r in records} == {"correct", "wrong"}  # a 2-epoch model errs
    for record in records:
        image = paths.index(Path(record["image"]))
        assert CLASSES[y[image]] == record["class"]
        assert record["predicted"] == CLASSES[predicted[image]]
        assert (record["predicted"] == record["class"]) == (record["kind"] == "correct")
        assert record["png"].startswith("explain/")
        assert Image.open(tmp_path / record["png"]).format == "PNG"


def _study_with(storage: str, train_best: dict | None) -> None:
    from search.config import load_config

    study = optuna.create_study(study_name="fake", storage=storage, direction="maximize")
    study.set_user_attr("config", load_config("demo").to_dict())
    if train_best is not None:
        study.set_user_attr("train_best", train_best)


def _panel(report: Path) -> str:
    """The report's Grad-CAM section (plotly.js, embedded above it, holds data URIs too)."""
    page = report.read_text()
    return page[page.index('<section class="gradcam">') :]


def test_report_embeds_the_train_best_examples(tmp_path: Path) -> None:
    from search.results.explain import overlay_png
    from search.results.report import write_report

    run = tmp_path / "runs" / "best"
    records, payloads = [], []
    for i, (name, kind) in enumerate(
        [("glioma", "correct"), ("glioma", "wrong"), ("no_tumor", "correct")]
    ):
        png = f"explain/{name}_{kind}.png"
        pixels = np.full((SIZE, SIZE, 3), 40 * i, np.uint8)
        payloads.append(overlay_png(pixels, np.eye(4, dtype=np.float32), f"{name} 90.0%"))
        (run / "explain").mkdir(parents=True, exist_ok=True)
        (run / png).write_bytes(payloads[-1])
        records.append(
            {"class": name, "kind": kind, "predicted": name, "probability": 0.9, "png": png}
        )
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    _study_with(storage, {"study": "fake", "out_dir": str(run), "examples": records})
    out = tmp_path / "report.html"
    write_report("fake", storage, out)
    page = out.read_text()
    for payload in payloads:
        assert f"data:image/png;base64,{base64.b64encode(payload).decode()}" in page
    assert "no misclassified test image" in page  # no_tumor has no wrong example
    panel = _panel(out)
    assert panel.count('src="data:image/png;base64,') == 3

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    _study_with(
        elsewhere, {"study": "fake", "out_dir": str(tmp_path / "gone"), "examples": records}
    )
    write_report("fake", elsewhere, out)
    assert "is not on this machine" in _panel(out)
    assert "data:image/png" not in _panel(out)
    never = f"sqlite:///{tmp_path / 'never.db'}"
    _study_with(never, None)
    write_report("fake", never, out)
    assert "no train-best result yet" in _panel(out)
