"""`train-best --format keras,savedmodel,onnx,litert`: each format loaded in its own runtime
gives the Keras model's probabilities on the same image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_bad_input, run_cli
from tests.predictor.blocked import run_without_frameworks
from tests.search.conftest import TrainedBest, keras_backend
from tests.search.helpers import train_best_cli

TF_ONLY = pytest.mark.skipif(
    keras_backend() != "tensorflow", reason="exports run on the TensorFlow backend"
)


def _test_images(data: Path) -> list[Path]:
    return sorted((data / "Testing").rglob("*.jpg"))[:12]


def _pixels(paths: list[Path], size: int) -> np.ndarray:
    from data.decode import decode_image

    return np.stack([decode_image(p, size) for p in paths]).astype(np.float32)


@TF_ONLY
def test_each_format_gives_the_keras_probabilities(trained_best: TrainedBest) -> None:
    """The files train-best wrote, each run in its own runtime on the same image files."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from search.results.predict import load_model

    out, metrics = trained_best.out, trained_best.metrics
    assert set(metrics["formats"]) == {"keras", "savedmodel", "onnx", "litert"}
    for entry in metrics["formats"].values():
        assert (out / entry["path"]).exists()
        assert entry.get("max_abs_diff", 0.0) <= 1e-4
    model = load_model(out / "model.keras")
    size = int(model.input_shape[1])
    x = _pixels(_test_images(trained_best.data), size)
    keras_probs = np.asarray(model.predict_on_batch(x))

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"pixels": x})[0]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["producer"] == "tumor-search" and int(meta["input_size"]) == size
    assert json.loads(meta["class_names"]) == metrics["classes"]
    # Calibration travels inside: the file carries the fitted temperature, and its
    # probabilities are the calibrated model's.
    assert float(meta["temperature"]) == pytest.approx(metrics["calibration"]["temperature"])

    interpreter = Interpreter(model_path=str(out / "model.tflite"))
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    litert_probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    import tensorflow as tf

    saved = tf.saved_model.load(str(out / "saved_model"))
    saved_probs = saved.serve(tf.constant(x)).numpy()
    for name, probs in (("onnx", onnx_probs), ("litert", litert_probs), ("saved", saved_probs)):
        assert probs.shape == keras_probs.shape, name
        np.testing.assert_allclose(probs, keras_probs, atol=1e-4, err_msg=name)


@TF_ONLY
def test_onnx_predict_agrees_with_keras(trained_best: TrainedBest) -> None:
    """`predict --model model.onnx` where TensorFlow, Keras and Optuna cannot be imported,
    against `predict --model model.keras`."""
    folder = str(trained_best.data / "Testing")
    keras_run = run_cli(
        "predict", "--model", str(trained_best.out / "model.keras"), folder, "--json"
    )
    onnx_run = run_without_frameworks(
        ["predict", "--model", str(trained_best.out / "model.onnx"), folder, "--json"]
    )
    results = {}
    for name, done in (("model.keras", keras_run), ("model.onnx", onnx_run)):
        assert done.returncode == 0, done.stderr
        results[name] = {p["path"]: p for p in json.loads(done.stdout)}
    assert "leaked: []" in onnx_run.stderr
    assert results["model.keras"].keys() == results["model.onnx"].keys()
    for path, keras_row in results["model.keras"].items():
        onnx_row = results["model.onnx"][path]
        for name, p in keras_row["probabilities"].items():
            assert onnx_row["probabilities"][name] == pytest.approx(p, abs=1e-4)
        top, second = sorted(keras_row["probabilities"].values(), reverse=True)[:2]
        if top - second > 2e-4:  # a near tie may fall either way within the tolerance
            assert onnx_row["label"] == keras_row["label"]


@TF_ONLY
def test_exports_leave_augmentation_out(tmp_path: Path) -> None:
    """A model with random augmentation layers: every export is deterministic and equals
    Keras' inference (Keras' random layers would run in an exported graph otherwise)."""
    from models.builder import create_model
    from models.trial_config import Augmentation, TrialConfig
    from search.results.formats import FILE_NAMES, WRITERS, write_formats

    config = TrialConfig(backbone="small_cnn", head_depth=1, head_width=8, fine_tune=1.0)
    augment = Augmentation(flip=True, rotation=0.1, zoom=0.1, contrast=0.2)
    model = create_model(config, 3, 32, "none", augmentation=augment, class_names=["a", "b", "c"])
    assert "augment" in [layer.name for layer in model.layers]
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    written = write_formats(model, ("keras", "savedmodel", "onnx", "litert"), tmp_path, [], x)
    assert set(written) == {"savedmodel", "onnx", "litert"}
    for name, entry in written.items():
        assert entry.get("path") == FILE_NAMES[name], (name, entry.get("error"))
        run = WRITERS[name][1]  # the format's own runtime
        first, second = (run(tmp_path / FILE_NAMES[name], x.astype(np.float32)) for _ in range(2))
        assert np.array_equal(first, second), name  # two runs, the same bits
        assert entry["max_abs_diff"] <= 1e-4, name
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert not {op for op in ops if "Random" in op}, ops


def test_unknown_format_exits_2_before_training(trained_best: TrainedBest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = train_best_cli(trained_best.best, trained_best.data, out, "--format", "keras,pmml")
    assert_bad_input(result, "unknown format 'pmml'", "savedmodel, onnx, litert")
    assert not out.exists()


@pytest.mark.backends
def test_a_format_this_backend_or_backbone_cannot_write_exits_2(
    trained_best: TrainedBest, tmp_path: Path
) -> None:
    """Off TensorFlow every format but keras exits 2; on it, ONNX of a ConvNeXt does."""
    best = json.loads(trained_best.best.read_text())
    if keras_backend() == "tensorflow":
        best["trial_config"]["backbone"] = "convnext_tiny"
        expected = "cannot be converted to ONNX"
    else:
        expected = "needs the TensorFlow backend"
    path = tmp_path / "best.json"
    path.write_text(json.dumps(best))
    result = train_best_cli(path, trained_best.data, tmp_path / "other", "--format", "onnx")
    assert_bad_input(result, expected)
    assert not (tmp_path / "other").exists()


@TF_ONLY
def test_a_format_that_disagrees_is_removed_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check itself: a runtime whose probabilities are off by 0.01 loses its file."""
    from models.builder import create_model
    from models.trial_config import TrialConfig
    from search.results import formats

    writer, runner = formats.WRITERS["onnx"]
    monkeypatch.setitem(formats.WRITERS, "onnx", (writer, lambda path, x: runner(path, x) + 0.01))
    config = TrialConfig(backbone="small_cnn", head_depth=0, fine_tune=1.0)
    model = create_model(config, 2, 32, "none", class_names=["a", "b"])
    x = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    written = formats.write_formats(model, ("keras", "onnx"), tmp_path, ["a", "b"], x)
    assert written["onnx"]["path"] is None
    assert "differ from the Keras model's by 1.00e-02" in written["onnx"]["error"]
    assert list(tmp_path.iterdir()) == []
    assert formats.failures(written).startswith("not written: onnx (probabilities differ")
