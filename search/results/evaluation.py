"""Held-out test metrics (scikit-learn), bootstrap confidence intervals and calibration
measures (expected calibration error, Brier score, reliability bins).

The bootstrap resamples the n test images with replacement. Since every metric here is a
function of the confusion matrix, one resample is one multinomial draw of n images over
the matrix's cells, so 2,000 resamples are 2,000 confusion matrices, scored at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95
CALIBRATION_BINS = 15


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: list[str] | tuple[str, ...],
    probs: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision / recall (sensitivity) /
    specificity / F1 / support and the confusion matrix (rows: true, columns: predicted).

    Args:
        y_true: ``(n,)`` true labels, indices into `classes`.
        y_pred: ``(n,)`` predicted labels.
        classes: Class names in label order.
        probs: ``(n, k)`` predicted probabilities; adds the log loss when given.
    """
    from sklearn import metrics

    labels = list(range(len(classes)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    matrix = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    specificity = confusion_metrics(matrix)["specificity"]
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "sensitivity": float(recall[i]),
            "specificity": _finite(specificity[i]),
        }
        for i, name in enumerate(classes)
    }
    out: dict[str, Any] = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(
            metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }
    if probs is not None:
        out["log_loss"] = float(metrics.log_loss(y_true, probs, labels=labels))
    return out


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (scikit-learn's definition)."""
    import warnings

    from sklearn import metrics

    with warnings.catch_warnings():  # a predicted class absent from y_true is left out
        warnings.simplefilter("ignore", UserWarning)
        return float(metrics.balanced_accuracy_score(y_true, y_pred))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den, `empty` where den is 0."""
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    return np.divide(num, den, out=out, where=den > 0)


def confusion_metrics(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of one or many confusion matrices at once (shape ``(..., k, k)``).

    Returns accuracy, balanced accuracy (mean sensitivity over the classes present, NaN
    classes left out) and macro F1 (0 for a class never seen nor predicted, as
    scikit-learn with ``zero_division=0``) of shape ``(...)``, and per-class sensitivity
    (recall) and specificity (NaN where undefined) and F1 of shape ``(..., k)``.
    """
    m = np.asarray(matrices, dtype=np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    actual, predicted = m.sum(axis=-1), m.sum(axis=-2)
    total = m.sum(axis=(-2, -1))
    fn, fp = actual - tp, predicted - tp
    tn = total[..., None] - tp - fn - fp
    sensitivity = _ratio(tp, actual, np.nan)
    specificity = _ratio(tn, tn + fp, np.nan)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, 0.0)
    with np.errstate(invalid="ignore"):
        present = ~np.isnan(sensitivity)
        balanced = np.where(present, sensitivity, 0.0).sum(axis=-1) / present.sum(axis=-1)
    return {
        "accuracy": _ratio(tp.sum(axis=-1), total, np.nan),
        "balanced_accuracy": balanced,
        "macro_f1": f1.mean(axis=-1),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": f1,
    }


def resample_confusion(
    matrix: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """`resamples` bootstrap confusion matrices: n images drawn with replacement from the
    test set are n multinomial draws over the matrix's cells."""
    cm = np.asarray(matrix, dtype=np.int64)
    n = int(cm.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cm.ravel() / n, size=resamples)
    return draws.reshape(resamples, *cm.shape)


def _interval(value: float, samples: np.ndarray, level: float) -> dict[str, float | None]:
    tail = 100.0 * (1.0 - level) / 2.0
    finite = samples[np.isfinite(samples)]
    if not np.isfinite(value) or finite.size == 0:
        return {"value": _finite(value), "lower": None, "upper": None}
    lower, upper = np.percentile(finite, [tail, 100.0 - tail])
    return {"value": float(value), "lower": float(lower), "upper": float(upper)}


def bootstrap_intervals(
    matrix: np.ndarray | list[list[int]],
    classes: list[str] | tuple[str, ...],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of accuracy, balanced accuracy, macro F1 and each
    class's sensitivity (recall), specificity and F1, from the test confusion matrix.

    Returns:
        ``{metric: {value, lower, upper}, "per_class": {class: {sensitivity: {...},
        specificity: {...}, f1: {...}}}, "resamples", "seed", "level", "method"}``.
    """
    cm = np.asarray(matrix, dtype=np.int64)
    point = confusion_metrics(cm)
    boot = confusion_metrics(resample_confusion(cm, resamples, seed))
    out: dict[str, Any] = {
        name: _interval(float(point[name]), boot[name], level)
        for name in ("accuracy", "balanced_accuracy", "macro_f1")
    }
    out["per_class"] = {
        c: {
            kind: _interval(float(point[kind][i]), boot[kind][:, i], level)
            for kind in ("sensitivity", "specificity", "f1")
        }
        for i, c in enumerate(classes)
    }
    out.update(
        resamples=resamples,
        seed=seed,
        level=level,
        method="percentile bootstrap over test images",
    )
    return out


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of the sum over classes of (p - onehot)^2."""
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(p.shape[1])[np.asarray(y, dtype=np.int64)]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Per confidence bin (equal width over (0, 1]): mean confidence, accuracy and count
    (None for an empty bin); the bins' upper edges."""
    p = np.asarray(probs, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(y)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    return {
        "bins": bins,
        "upper_edges": [round((b + 1) / bins, 6) for b in range(bins)],
        "confidence": [float(s / c) if c else None for s, c in zip(conf_sum, count, strict=True)],
        "accuracy": [float(s / c) if c else None for s, c in zip(hit_sum, count, strict=True)],
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(
    probs: np.ndarray, y: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """ECE: the count-weighted mean gap between accuracy and confidence over the bins."""
    return ece_of(reliability(probs, y, bins))


def ece_of(bins: dict[str, Any]) -> float:
    """The ECE of a `reliability` record."""
    n = sum(bins["count"])
    gaps = [
        c * abs(a - f)
        for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
        if c
    ]
    return float(sum(gaps) / n) if n else float("nan")
