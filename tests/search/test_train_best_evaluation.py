"""train-best's evaluation: bootstrap intervals, temperature scaling, the calibrated model,
the model card and the dashboard note (one cheap run of the CLI, shared by the tests)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.search.conftest import TrainedBest


def test_metrics_hold_bootstrap_intervals(trained_best: TrainedBest) -> None:
    m = trained_best.metrics
    ci, test = m["intervals"], m["test"]
    assert ci["resamples"] == 2000 and ci["level"] == 0.95
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert ci[name]["value"] == pytest.approx(test[name])
        assert ci[name]["lower"] <= ci[name]["value"] <= ci[name]["upper"]
    for c in m["classes"]:
        assert test["per_class"][c]["sensitivity"] == test["per_class"][c]["recall"]
        for kind in ("sensitivity", "specificity", "f1"):
            one = ci["per_class"][c][kind]
            assert one["value"] == pytest.approx(test["per_class"][c][kind])
            assert 0.0 <= one["lower"] <= one["value"] <= one["upper"] <= 1.0


def test_temperature_is_fitted_on_validation_and_lowers_its_error(
    trained_best: TrainedBest,
) -> None:
    cal = trained_best.metrics["calibration"]
    assert cal["temperature"] > 0 and cal["fitted_on"].startswith("validation split")
    # Kept only when held-out folds of the validation predictions agree; either way, why.
    assert cal["reason"].startswith("applied: " if cal["applied"] else "not applied")
    assert "cross-validated NLL on the validation split" in cal["reason"]
    assert cal["applied"] == (cal["temperature"] != 1.0)
    fit = cal["fit"]
    assert fit["nll_after"] <= fit["nll_before"]  # T minimises the NLL where it was fitted
    for when in ("before", "after"):
        bins = cal["reliability"][when]
        assert sum(bins["count"]) == trained_best.metrics["test_images"] and bins["bins"] == 15
        assert 0.0 <= cal["test"][f"ece_{when}"] <= 1.0 and cal["test"][f"brier_{when}"] >= 0


def test_saved_model_gives_the_calibrated_probabilities(trained_best: TrainedBest) -> None:
    from models.calibration import logits_model, temperature_of
    from search.results.calibrate import softmax
    from search.results.evaluation import expected_calibration_error
    from search.results.export import read_export
    from search.results.outputs import read_document
    from search.results.predict import load_model
    from search.study_data import load_test, prepare

    cal = trained_best.metrics["calibration"]
    model = load_model(trained_best.out / "model.keras")
    assert temperature_of(model) == pytest.approx(cal["temperature"], rel=1e-5)
    config, _ = read_export(read_document(trained_best.best), str(trained_best.best))
    test = load_test(prepare(config, trained_best.data), config.data.image_size)
    probs = model.predict(test.x, verbose=0)
    logits = logits_model(model).predict(test.x, verbose=0)
    np.testing.assert_allclose(probs, softmax(logits, cal["temperature"]), atol=1e-5)
    if abs(cal["temperature"] - 1.0) > 0.05:
        assert np.abs(probs - softmax(logits)).max() > 1e-3  # not the raw softmax
    ece = expected_calibration_error(probs, test.y)
    assert ece == pytest.approx(cal["test"]["ece_after"], abs=1e-4)


def test_model_card_and_note_hold_the_intervals_and_calibration(
    trained_best: TrainedBest,
) -> None:
    import optuna
    import optuna_dashboard

    from search.results.model_card import SECTIONS

    m = trained_best.metrics
    card = (trained_best.out / "MODEL_CARD.md").read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in card
    assert "not for diagnosis" in card and m["data_fingerprint"] in card
    assert f"T = **{m['calibration']['temperature']:.3f}**" in card
    assert "95 % CI" in card and "specificity" in card and "Phantom data" in card
    assert "| sensitivity (recall) | specificity | F1 |" in card
    assert "trials 3 complete" in card  # read from the study
    assert not [p for p in trained_best.out.iterdir() if p.name.startswith(".")]

    study = optuna.load_study(study_name="tiny", storage=trained_best.storage)
    recorded = study.user_attrs["train_best"]
    assert recorded["out_dir"] == str(trained_best.out.resolve())
    assert recorded["intervals"] == m["intervals"]
    assert recorded["calibration"]["reliability"] == m["calibration"]["reliability"]
    note = optuna_dashboard.get_note(study)
    assert note.count("## Held-out test result") == 1
    assert "95 % CI" in note and "### Calibration" in note
    status = run_cli("status", "--study", "tiny", "--storage", trained_best.storage)
    assert status.returncode == 0, status.stderr
    assert "95 % CI" in status.stdout and "temperature" in status.stdout
