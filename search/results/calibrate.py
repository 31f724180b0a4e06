"""Temperature scaling of the selected model (Guo et al. 2017).

One scalar T divides the logits before the softmax; it is fitted by minimising the
negative log-likelihood of held-back predictions: the validation split's logits, or, when
train-best refits on train+val (no validation data left), finalize's out-of-fold logits
from the export. The NLL is convex in 1/T, so it is unimodal in log T and SciPy's bounded
scalar minimiser (Brent's method) on log T finds its minimum. The accuracy does not change: T > 0 keeps
every argmax.

A T fitted on a few hundred predictions can fit their noise and make calibration worse
elsewhere (real MRI: test ECE 0.025 -> 0.038 after a fit on validation). So T is judged on
predictions it was not fitted to: K-fold cross-validation over the held-back set (each
fold's T fitted on the other folds), and kept only when it lowers the held-out NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.progress import log
from search.results.evaluation import (
    CALIBRATION_BINS,
    brier_score,
    ece_of,
    reliability,
)
from search.training.batching import predict

T_LOW, T_HIGH = 0.05, 20.0
CV_FOLDS = 5
MIN_JUDGED = 10  # fewer held-back images than this cannot tell a better T from noise


@dataclass(frozen=True)
class FitSet:
    """Logits and labels the temperature is fitted on, and where they come from."""

    logits: np.ndarray
    labels: np.ndarray
    source: str


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    picked = z[np.arange(len(z)), np.asarray(labels, dtype=np.int64)]
    return float((log_norm - picked).mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, low: float = T_LOW, high: float = T_HIGH
) -> float:
    """The T in [low, high] that minimises the NLL (`scipy.optimize.minimize_scalar`,
    bounded, on log T); 1.0 when no T does better than leaving the model as it is."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda u: nll(logits, labels, math.exp(u)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    best = math.exp(float(found.x))
    return best if nll(logits, labels, best) < nll(logits, labels, 1.0) else 1.0


@dataclass(frozen=True)
class TemperatureChoice:
    """The temperature train-best keeps (1.0 when calibration is not applied) and why."""

    temperature: float
    applied: bool
    reason: str
    cv: dict[str, Any] | None = None  # folds, held-out NLL before and after


def choose_temperature(fit: FitSet, folds: int = CV_FOLDS, seed: int = 0) -> TemperatureChoice:
    """T fitted on all of `fit`, kept only when K-fold cross-validation shows that a T
    fitted on the other folds lowers each held-out fold's NLL in total."""
    from sklearn.model_selection import KFold, StratifiedKFold

    z, y = fit.logits, fit.labels
    n = len(y)
    if n < MIN_JUDGED:
        reason = f"{n} held-back images are too few to judge a temperature"
        return TemperatureChoice(1.0, False, reason)
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest >= 2:
        k = min(folds, smallest)
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(z, y)
    else:
        k = min(folds, n)
        splits = KFold(k, shuffle=True, random_state=seed).split(z)
    before = after = 0.0
    for train, held in splits:
        t = fit_temperature(z[train], y[train])
        before += nll(z[held], y[held]) * len(held)
        after += nll(z[held], y[held], t) * len(held)
    cv = {"folds": k, "nll_before": before / n, "nll_after": after / n}
    judged = (
        f"{k}-fold cross-validated NLL on the {fit.source}: {before / n:.4f} -> {after / n:.4f}"
    )
    t_all = fit_temperature(z, y)
    if after < before and t_all != 1.0:
        return TemperatureChoice(t_all, True, f"applied: {judged}", cv)
    return TemperatureChoice(1.0, False, f"not applied: {judged}, no better held out", cv)


def _out_of_fold(payload: dict[str, Any]) -> FitSet | None:
    """finalize's out-of-fold logits from the export, when it holds them."""
    final = payload.get("finalize")
    if not isinstance(final, dict):
        return None
    logits, labels = final.get("oof_logits"), final.get("oof_labels")
    if logits is None or labels is None or len(labels) == 0:
        return None
    x = np.asarray(logits, dtype=np.float64)
    return FitSet(x, np.asarray(labels, dtype=np.int64), f"out-of-fold logits ({len(x)} images)")


def fit_set(
    model: Any, train_val: Any, payload: dict[str, Any], batch_size: int, refit: bool = False
) -> FitSet | None:
    """What to fit T on: the validation split's logits; after a refit on train+val (the
    validation split was training data) or with no validation data, the export's
    out-of-fold logits; None when there is neither."""
    from models.calibration import logits_model

    if refit:
        return _out_of_fold(payload)
    x_val = getattr(train_val, "x_val", None)
    if x_val is not None and len(x_val):
        logits = predict(logits_model(model), x_val, batch_size)
        y = np.asarray(train_val.y_val, dtype=np.int64)
        return FitSet(np.asarray(logits, np.float64), y, f"validation split ({len(y)} images)")
    return _out_of_fold(payload)


def calibrate(
    model: Any, fitted_on: FitSet | None, x_test: np.ndarray, y_test: np.ndarray, batch_size: int
) -> tuple[Any, dict[str, Any]]:
    """Fit T, measure calibration before and after, return the calibrated model.

    Returns:
        The model with its temperature (`models.calibration.with_temperature`; the model
        unchanged when there is nothing to fit on) and the calibration record for
        metrics.json.
    """
    from models.calibration import logits_model, with_temperature

    test_logits = np.asarray(predict(logits_model(model), x_test, batch_size), np.float64)
    y = np.asarray(y_test, dtype=np.int64)
    choice = (
        TemperatureChoice(1.0, False, "no validation data and no out-of-fold logits to fit on")
        if fitted_on is None
        else choose_temperature(fitted_on)
    )
    t = choice.temperature
    before, after = softmax(test_logits), softmax(test_logits, t)
    record: dict[str, Any] = {
        "temperature": t,
        "applied": choice.applied,
        "reason": choice.reason,
        "cross_validation": choice.cv,
        "fitted_on": fitted_on.source if fitted_on is not None else None,
        "method": "temperature scaling: minimum NLL of softmax(logits / T)",
        "bins": CALIBRATION_BINS,
        "test": _measures(before, after, y, test_logits, t),
        "reliability": {"before": reliability(before, y), "after": reliability(after, y)},
    }
    if fitted_on is not None:
        z, labels = fitted_on.logits, fitted_on.labels
        record["fit"] = _measures(softmax(z), softmax(z, t), labels, z, t)
    if choice.applied:
        model = with_temperature(model, t)
    return model, record


def calibrate_selected(
    model: Any,
    train_val: Any,
    payload: dict[str, Any],
    test: Any,
    batch_size: int,
    refit: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """train-best's calibration step: fit T on the validation split (or, after a refit,
    the export's out-of-fold logits), keep it when it lowers the cross-validated NLL there,
    measure the test split before and after; the model and the record for metrics.json."""
    fitted_on = fit_set(model, train_val, payload, batch_size, refit)
    calibrated, record = calibrate(model, fitted_on, test.x, test.y, batch_size)
    m = record["test"]
    if not record["applied"]:
        log(f"not calibrated: {record['reason']}")
    else:
        log(
            f"temperature {record['temperature']:.3f}, fitted on the {fitted_on.source} "
            f"({record['reason']}); test ECE {m['ece_before']:.4f} -> {m['ece_after']:.4f}, "
            f"Brier {m['brier_before']:.4f} -> {m['brier_after']:.4f}"
        )
    return calibrated, record


def _measures(
    before: np.ndarray, after: np.ndarray, y: np.ndarray, logits: np.ndarray, t: float
) -> dict[str, float]:
    """ECE, Brier score and NLL before and after calibration."""
    return {
        "ece_before": ece_of(reliability(before, y)),
        "ece_after": ece_of(reliability(after, y)),
        "brier_before": brier_score(before, y),
        "brier_after": brier_score(after, y),
        "nll_before": nll(logits, y),
        "nll_after": nll(logits, y, t),
        "images": len(y),
    }
