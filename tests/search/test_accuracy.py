"""The search learns: a short study on phantoms beats chance by far, and the test accuracy
that `train-best` reports is the one its saved model gives through `predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.conftest import run_cli
from tests.search.helpers import write_config

# Folder names of the Kaggle layout -> the labels the model predicts (written out here, not
# taken from the code under test).
FOLDER_LABELS = {
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "no_tumor",
    "pituitary_tumor": "pituitary",
}
MIN_VAL_ACCURACY = 0.6  # 4 classes: chance is 0.25
MIN_TEST_ACCURACY = 0.5
# Measured on 2 cores for data seeds 1-7: best validation accuracy 0.75-0.875 (32 images),
# test accuracy 0.70-0.875 (40 images); predict agreed with metrics.json every time.
DATA_SEED = 5

# small_cnn from scratch, as the demo config trains offline; everything fixed, no pruner:
# one trial whose outcome depends only on the data and the seeds.
LEARNING_CONFIG: dict[str, Any] = {
    "name": "learns",
    "trials": 1,
    "data": {"split": "official", "seed": 1, "val_fraction": 0.2, "image_size": 48},
    "training": {"epochs": 12, "early_stopping_patience": 0, "seed": 0},
    "space": {
        "backbone": ["small_cnn"],
        "head_depth": [0],
        "head_width": [32],
        "dropout": [0.0],
        "learning_rate": [3.0e-3],
        "fine_tune": [1.0],
        "batch_size": [16],
    },
    "pruner": {"name": "none"},
}


def learn_export_train_predict(root: Path, data_seed: int) -> dict[str, Any]:
    """Phantoms made with `data_seed`, then run -> export -> train-best -> predict, all
    through the CLI. Returns what the test checks."""
    from data.synth import synthesize

    data = root / "data"
    synthesize(data, per_class=50, size=48, seed=data_seed, test_fraction=0.2)
    config = write_config(root / "learns.yaml", **LEARNING_CONFIG)
    storage = f"sqlite:///{root / 'studies.db'}"
    run = run_cli(
        "run", "--config", str(config), "--data", str(data), "--storage", storage, cwd=root
    )
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="learns", storage=storage)
    best = root / "best.json"
    export = run_cli("export", "--study", "learns", "--storage", storage, "--out", str(best))
    assert export.returncode == 0, export.stderr
    out = root / "model"
    trained = run_cli(
        "train-best", "--config", str(best), "--data", str(data), "--out", str(out), "--seeds", "1"
    )
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    testing = data / "Testing"
    predicted = run_cli("predict", "--model", str(out / "model.keras"), str(testing), "--json")
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    truth = {
        str(path): FOLDER_LABELS[folder.name]
        for folder in testing.iterdir()
        for path in folder.iterdir()
    }
    return {
        "val_accuracy": study.best_value,
        "metrics": metrics,
        "rows": rows,
        "truth": truth,
    }


def test_short_study_learns_and_test_accuracy_matches_predict(tmp_path: Path) -> None:
    """Guards two things. A short study of small_cnn on phantoms reaches validation accuracy
    >= 0.6, and its retrained model test accuracy >= 0.5 (4 classes: a training, decoding
    or labelling regression drops them to chance). And `predict` with the saved model on the
    Testing folder gives, against the folder labels, exactly the test accuracy and confusion
    matrix that `train-best` wrote (images and labels kept in step, the same pixels at
    evaluation and at prediction, the model saved is the model evaluated)."""
    result = learn_export_train_predict(tmp_path, DATA_SEED)
    assert result["val_accuracy"] >= MIN_VAL_ACCURACY, result["val_accuracy"]
    assert result["metrics"]["test"]["accuracy"] >= MIN_TEST_ACCURACY, result["metrics"]["test"]

    metrics, rows, truth = result["metrics"], result["rows"], result["truth"]
    assert sorted(row["path"] for row in rows) == sorted(truth)
    assert metrics["test_images"] == len(truth)  # phantoms: no duplicate leaves Testing
    correct = sum(row["label"] == truth[row["path"]] for row in rows)
    assert correct / len(rows) == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    # The confusion matrix holds the same predictions, class by class.
    classes = metrics["test"]["classes"]
    matrix = [[0] * len(classes) for _ in classes]
    for row in rows:
        matrix[classes.index(truth[row["path"]])][classes.index(row["label"])] += 1
    assert matrix == metrics["test"]["confusion_matrix"]
