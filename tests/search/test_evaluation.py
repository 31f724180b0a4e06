"""Test metrics, bootstrap intervals, calibration measures and temperature fitting on known
arrays (no training)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics

from search.results.calibrate import fit_temperature, nll, softmax
from search.results.evaluation import (
    bootstrap_intervals,
    brier_score,
    classification_metrics,
    confusion_metrics,
    expected_calibration_error,
    reliability,
    resample_confusion,
)

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]
CONFUSION = np.array([[18, 1, 0, 1], [2, 15, 2, 1], [0, 1, 19, 0], [0, 0, 1, 19]])


def labels_of(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (true, predicted) label arrays whose confusion matrix is `matrix`."""
    k = matrix.shape[0]
    cells = np.repeat(np.arange(k * k), np.asarray(matrix).ravel())
    return cells // k, cells % k


def test_classification_metrics_keep_their_keys_and_add_sensitivity_and_specificity() -> None:
    y_true, y_pred = labels_of(CONFUSION)
    m = classification_metrics(y_true, y_pred, CLASSES)
    assert m["confusion_matrix"] == CONFUSION.tolist() and m["classes"] == CLASSES
    assert m["accuracy"] == pytest.approx(71 / 80)
    assert m["balanced_accuracy"] == pytest.approx(np.mean([18 / 20, 15 / 20, 19 / 20, 19 / 20]))
    glioma = m["per_class"]["glioma"]
    assert glioma["precision"] == pytest.approx(18 / 20) and glioma["support"] == 20
    assert glioma["sensitivity"] == glioma["recall"] == pytest.approx(18 / 20)
    assert glioma["specificity"] == pytest.approx((60 - 2) / 60)  # 2 others called glioma
    assert m["macro_f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro"))
    probs = np.full((80, 4), 0.1) + 0.6 * np.eye(4)[y_pred]  # 0.7 on the predicted class
    # 71 right answers at probability 0.7, 9 wrong ones at 0.1 on the true class.
    expected = -(71 * np.log(0.7) + 9 * np.log(0.1)) / 80
    log_loss = classification_metrics(y_true, y_pred, CLASSES, probs)["log_loss"]
    assert log_loss == pytest.approx(expected, rel=1e-9)


def test_vectorised_metrics_match_scikit_learn_on_resampled_labels() -> None:
    small = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 1]])  # small: classes vanish in resamples
    for matrix in (CONFUSION, small):
        k = matrix.shape[0]
        draws = resample_confusion(matrix, resamples=8, seed=3)
        ours = confusion_metrics(draws)
        for b, cm in enumerate(draws):
            y_true, y_pred = labels_of(cm)
            assert ours["accuracy"][b] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
            with warnings.catch_warnings():  # a class absent from a resample: left out
                warnings.simplefilter("ignore", UserWarning)
                expected = metrics.balanced_accuracy_score(y_true, y_pred)
            assert ours["balanced_accuracy"][b] == pytest.approx(expected)
            f1 = metrics.f1_score(y_true, y_pred, labels=range(k), average="macro", zero_division=0)
            assert ours["macro_f1"][b] == pytest.approx(f1)
            recall = metrics.recall_score(
                y_true, y_pred, labels=range(k), average=None, zero_division=np.nan
            )
            np.testing.assert_allclose(ours["sensitivity"][b], recall)
            for c in range(k):  # specificity is the recall of "not c"
                spec = metrics.recall_score(y_true != c, y_pred != c, zero_division=np.nan)
                assert ours["specificity"][b, c] == pytest.approx(spec, nan_ok=True)


def test_resampling_draws_n_images_per_matrix() -> None:
    draws = resample_confusion(CONFUSION, resamples=2000, seed=0)
    assert draws.shape == (2000, 4, 4) and (draws.sum(axis=(1, 2)) == 80).all()
    assert np.array_equal(draws, resample_confusion(CONFUSION, resamples=2000, seed=0))
    # the mean resample is the observed matrix
    np.testing.assert_allclose(draws.mean(axis=0), CONFUSION, atol=0.4)


def test_bootstrap_intervals_contain_the_value_and_shrink_with_more_images() -> None:
    ci = bootstrap_intervals(CONFUSION, CLASSES)
    assert ci["resamples"] == 2000 and ci["level"] == 0.95
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert ci[name]["lower"] <= ci[name]["value"] <= ci[name]["upper"]
    assert ci["accuracy"]["value"] == pytest.approx(71 / 80)
    # binomial standard error sqrt(p(1-p)/n) = 0.035: the 95 % interval is about +-0.07
    assert ci["accuracy"]["upper"] - ci["accuracy"]["lower"] == pytest.approx(0.14, abs=0.03)
    for c in CLASSES:
        for kind in ("sensitivity", "specificity", "f1"):
            one = ci["per_class"][c][kind]
            assert 0 <= one["lower"] <= one["value"] <= one["upper"] <= 1
    # Per-class F1 (and recall) are scikit-learn's on the images the matrix counts.
    from sklearn.metrics import f1_score, recall_score

    y_true = np.repeat(np.arange(4), np.asarray(CONFUSION).sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(4), row) for row in CONFUSION])
    for i, c in enumerate(CLASSES):
        f1 = f1_score(y_true, y_pred, average=None)[i]
        recall = recall_score(y_true, y_pred, average=None)[i]
        assert ci["per_class"][c]["f1"]["value"] == pytest.approx(f1)
        assert ci["per_class"][c]["sensitivity"]["value"] == pytest.approx(recall)
    wide = ci["accuracy"]["upper"] - ci["accuracy"]["lower"]
    big = bootstrap_intervals(CONFUSION * 10, CLASSES)["accuracy"]
    assert big["upper"] - big["lower"] < wide / 2


def test_brier_and_ece_on_known_probabilities() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    assert brier_score(probs, y) == pytest.approx((0.02 + 0.08 + 0.98 + 0.32) / 4)
    assert brier_score(np.eye(2)[y], y) == 0.0
    bins = reliability(probs, y, bins=10)
    assert sum(bins["count"]) == 4 and bins["count"][8] == 1  # 0.9 sits in (0.8, 0.9]
    # confidences 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (right): one image per bin
    expected = (abs(1 - 0.9) + abs(1 - 0.8) + abs(0 - 0.7) + abs(1 - 0.6)) / 4
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(expected)


def _golden_section_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The hand-written golden-section search on log T that `fit_temperature` replaced."""
    import math

    golden = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = math.log(0.05), math.log(20.0)
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    while b - a > 1e-5:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = nll(logits, labels, math.exp(d))
    best = math.exp((a + b) / 2.0)
    return best if nll(logits, labels, best) < nll(logits, labels, 1.0) else 1.0


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 12.0])
def test_fitted_temperature_equals_the_hand_written_search(scale: float) -> None:
    rng = np.random.default_rng(int(scale * 10))
    logits = rng.normal(0.0, scale, size=(500, 4))
    y = np.where(rng.random(500) < 0.7, logits.argmax(axis=1), rng.integers(0, 4, 500))
    assert fit_temperature(logits, y) == pytest.approx(
        _golden_section_temperature(logits, y), rel=1e-4
    )


def test_fitted_temperature_recovers_the_one_that_made_the_data() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(4000, 4))
    for true_t in (0.5, 1.0, 2.5):
        y = np.array([rng.choice(4, p=p) for p in softmax(logits, true_t)])
        fitted = fit_temperature(logits, y)
        assert fitted == pytest.approx(true_t, rel=0.05)
        assert nll(logits, y, fitted) <= nll(logits, y, 1.0)
        before = expected_calibration_error(softmax(logits), y)
        after = expected_calibration_error(softmax(logits, fitted), y)
        assert after < 0.03 and (true_t == 1.0 or after < before)


def test_temperature_falls_back_to_out_of_fold_logits_without_validation_data() -> None:
    """A refit on train+val leaves no validation split: T is fitted on finalize's
    out-of-fold logits from the export, and nothing is fitted when there are none."""
    from types import SimpleNamespace

    from search.results.calibrate import fit_set

    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, size=(600, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits, 0.5)])
    no_val = SimpleNamespace(x_val=np.zeros((0, 32, 32, 3), np.uint8), y_val=np.zeros(0))
    payload = {"finalize": {"oof_logits": logits.tolist(), "oof_labels": labels.tolist()}}
    chosen = fit_set(None, no_val, payload, batch_size=16)
    assert chosen is not None and chosen.source.startswith("out-of-fold")
    assert fit_temperature(chosen.logits, chosen.labels) == pytest.approx(0.5, rel=0.1)
    assert fit_set(None, no_val, {"finalize": {}}, batch_size=16) is None
    assert fit_set(None, no_val, {}, batch_size=16) is None


def _calibrated_sample(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): T = temperature is right."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, 4))
    return logits, np.array([rng.choice(4, p=p) for p in softmax(logits, temperature)])


def test_a_temperature_that_only_fits_its_own_images_is_not_applied() -> None:
    """40 held-back predictions of a calibrated model: the T fitted on them (1.31) lowers
    their own NLL but raises it on new images; cross-validation sees that and keeps T = 1."""
    from search.results.calibrate import FitSet, choose_temperature

    logits, y = _calibrated_sample(40, 1.0, seed=0)
    in_sample = fit_temperature(logits, y)
    assert in_sample == pytest.approx(1.306, abs=0.01)  # what was kept before this check
    fresh_logits, fresh_y = _calibrated_sample(20000, 1.0, seed=1)
    assert nll(fresh_logits, fresh_y, in_sample) > nll(fresh_logits, fresh_y, 1.0)
    choice = choose_temperature(FitSet(logits, y, "validation split (40 images)"))
    assert not choice.applied and choice.temperature == 1.0
    assert choice.reason.startswith("not applied: 5-fold cross-validated NLL on the validation")
    assert choice.cv is not None and choice.cv["nll_after"] >= choice.cv["nll_before"]


def test_an_overconfident_model_is_calibrated_when_held_out_nll_drops() -> None:
    from search.results.calibrate import FitSet, choose_temperature

    logits, y = _calibrated_sample(300, 2.5, seed=0)  # the model's logits are 2.5x too big
    choice = choose_temperature(FitSet(logits, y, "validation split (300 images)"))
    assert choice.applied and choice.temperature == pytest.approx(fit_temperature(logits, y))
    assert choice.temperature == pytest.approx(2.5, rel=0.2)
    assert choice.cv is not None and choice.cv["nll_after"] < choice.cv["nll_before"]
    few = choose_temperature(FitSet(logits[:9], y[:9], "validation split (9 images)"))
    assert not few.applied and "too few" in few.reason
