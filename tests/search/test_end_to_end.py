"""A whole tiny study through the CLI: run, status, export, train-best, predict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
import pytest

from models.trial_config import TrialConfig
from search.config import StudyConfig
from search.space import replay
from tests.conftest import assert_bad_input, run_cli
from tests.search.conftest import TinyStudy
from tests.search.helpers import expected_device, train_best_cli


def _study(tiny: TinyStudy) -> optuna.Study:
    return optuna.load_study(study_name=tiny.name, storage=tiny.storage)


@pytest.mark.backends
def test_run_records_config_fingerprint_and_every_trial(tiny_study: TinyStudy) -> None:
    study = _study(tiny_study)
    check = json.loads(
        run_cli(
            "data", "check", str(tiny_study.data), "--json", "--seed", "1", "--val-fraction", "0.2"
        ).stdout
    )
    assert study.user_attrs["data_fingerprint"] == check["fingerprint"]
    assert StudyConfig.from_dict(study.user_attrs["config"]).trials == 3
    trials = study.get_trials()
    assert len(trials) == 3
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        for key in (
            "trial_config",
            "history",
            "params",
            "seconds_per_epoch",
            "wall_seconds",
            "best_epoch",
            "rss_mb",
        ):
            assert key in t.user_attrs, key
        assert len(t.user_attrs["history"]["val_accuracy"]) == len(t.intermediate_values) == 2
        assert t.value == max(t.user_attrs["history"]["val_accuracy"])
    assert "Best configuration" in tiny_study.run_stdout
    assert "tumor-search dashboard --storage" in tiny_study.run_stdout
    assert "optuna-dashboard" in tiny_study.run_stdout
    assert "[trial 2] epoch 2/2" in tiny_study.run_stderr


@pytest.mark.backends
def test_status_text_and_json(tiny_study: TinyStudy) -> None:
    text = run_cli("status", "--study", "tiny", "--storage", tiny_study.storage)
    assert text.returncode == 0 and "3/3" in text.stdout and "3 complete" in text.stdout
    status = json.loads(
        run_cli("status", "--study", "tiny", "--storage", tiny_study.storage, "--json").stdout
    )
    assert status["counts"]["complete"] == 3 and status["budget"] == 3 and status["running"] == []
    runtime = f"{os.environ.get('KERAS_BACKEND', 'tensorflow')} on {expected_device()}"
    assert status["runtimes"] == {runtime: 3}
    assert f"ran on:   3 trials {runtime}\n" in text.stdout


def test_export_round_trips_through_the_space(tiny_study: TinyStudy, tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    result = run_cli(
        "export",
        "--study",
        "tiny",
        "--storage",
        tiny_study.storage,
        "--out",
        str(out),
        "--top",
        "2",
    )
    assert result.returncode == 0, result.stderr
    best = json.loads(out.read_text())
    study = _study(tiny_study)
    config = StudyConfig.from_dict(study.user_attrs["config"])
    exported = TrialConfig.from_dict(best["trial_config"])
    assert exported == replay(study.best_trial.params, config.space)
    assert exported == TrialConfig.from_dict(study.best_trial.user_attrs["trial_config"])
    assert best["trial"] == study.best_trial.number and best["value"] == study.best_value
    assert best["data_fingerprint"] == study.user_attrs["data_fingerprint"]
    assert {"optuna", "keras", "python"} <= set(best["versions"])
    assert len(best["top"]) == 2
    yaml_out = tmp_path / "best.yaml"
    assert (
        run_cli(
            "export", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(yaml_out)
        ).returncode
        == 0
    )
    import yaml

    assert yaml.safe_load(yaml_out.read_text())["trial_config"] == best["trial_config"]


@pytest.mark.backends
def test_train_best_then_predict(tiny_study: TinyStudy, tmp_path: Path) -> None:
    best = tmp_path / "best.json"
    assert (
        run_cli(
            "export", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(best)
        ).returncode
        == 0
    )
    out = tmp_path / "runs" / "best"  # parent folders are made
    result = train_best_cli(
        best, tiny_study.data, out, "--seeds", "2", "--storage", tiny_study.storage
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert test["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert np.asarray(test["confusion_matrix"]).sum() == metrics["test_images"] == 16
    assert set(test["per_class"]["glioma"]) == {
        "precision",
        "recall",
        "f1",
        "support",
        "sensitivity",
        "specificity",
    }
    assert len(metrics["seeds"]) == 2 and "test_accuracy_std" in metrics
    assert (out / "model.keras").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    recorded = _study(tiny_study).user_attrs["train_best"]
    assert recorded["test"]["accuracy"] == test["accuracy"]
    import optuna_dashboard

    note = optuna_dashboard.get_note(_study(tiny_study))
    assert "Objective" in note and note.count("## Held-out test result") == 1

    images = tiny_study.data / "Testing" / "glioma_tumor"
    one_file = next(images.iterdir())
    predicted = run_cli(
        "predict", "--model", str(out / "model.keras"), str(images), str(one_file), "--json"
    )
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert len(rows) == 5
    for row in rows:
        assert row["label"] in test["classes"]
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    assert_bad_input(
        run_cli("predict", "--model", str(out / "model.keras"), str(not_image)), "not an image"
    )
