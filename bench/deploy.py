"""predict_cold_start: seconds from starting `tumor-search predict` to its first prediction
with model.keras (TensorFlow) and with model.onnx (onnxruntime, no TensorFlow), and with
`tumor-predict` (the separate predictor distribution), median of 3 runs each, side by side.

The model is small_cnn at 64 px (what the cold start costs does not depend on its weights);
its ONNX file is written and checked as `train-best --format onnx` does.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

from bench.harness import note, phantoms, report, timed

RUNS = 3


def _models(workdir: Path) -> Path:
    from models.builder import create_model
    from models.trial_config import TrialConfig
    from search.results.formats import write_formats
    from search.results.outputs import save_model

    out = workdir / "deploy-models"
    out.mkdir(exist_ok=True)
    config = TrialConfig(backbone="small_cnn", head_depth=1, head_width=64, fine_tune=1.0)
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    model = create_model(config, 4, 64, "none", class_names=classes)
    save_model(model, out / "model.keras")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    write_formats(model, ("keras", "onnx"), out, classes, pixels)
    return out


def run(workdir: Path) -> None:
    images = phantoms(workdir, per_class=10, size=64)
    image = str(sorted((images / "Testing").rglob("*.jpg"))[0])
    out = _models(workdir)
    predictor = shutil.which("tumor-predict", path=str(Path(sys.executable).parent))
    commands = {
        "keras": [sys.executable, "-m", "search", "predict", "--model", str(out / "model.keras")],
        "onnx": [sys.executable, "-m", "search", "predict", "--model", str(out / "model.onnx")],
    }
    if predictor:
        commands["tumor_predict"] = [predictor, "--model", str(out / "model.onnx")]
    seconds: dict[str, float] = {}
    for name, command in commands.items():
        runs = [timed([*command, image])[0] for _ in range(RUNS)]
        seconds[name] = statistics.median(runs)
        note(f"predict cold start, {name}: " + ", ".join(f"{s:.2f}s" for s in runs))
    report(
        "predict_cold_start_keras_over_onnx",
        seconds["keras"] / seconds["onnx"],
        keras_s=f"{seconds['keras']:.2f}",
        onnx_s=f"{seconds['onnx']:.2f}",
        tumor_predict_s=f"{seconds.get('tumor_predict', float('nan')):.2f}",
    )
