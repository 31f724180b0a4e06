"""Validation metrics that Keras does not compute: balanced accuracy, macro F1 and each
class's recall, written into every epoch's logs.

`ValidationMetrics` must come first among a fit's callbacks: Keras hands the same logs
mapping to each callback in turn, so the recorder, the best-weights keeper, early stopping
and the pruning callback all read the values it adds. It costs one prediction pass over the
validation split per epoch, so `fit` adds it only when the objective or a constraint needs it.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, recall_score

from models.backend import keras_module
from search.constraints import RECALL_PREFIX

keras = keras_module()


def class_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Balanced accuracy, macro F1 and per-class recall, under their epoch-log keys."""
    labels = list(range(len(classes)))
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0.0)
    out = {
        # Mean recall over the classes present, as sklearn's balanced_accuracy_score.
        "val_balanced_accuracy": float(np.mean(recalls[np.isin(labels, y_true)])),
        "val_macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0.0)
        ),
    }
    out.update(
        {f"{RECALL_PREFIX}{name}": float(r) for name, r in zip(classes, recalls, strict=True)}
    )
    return out


class ValidationMetrics(keras.callbacks.Callback):
    """Adds `class_metrics` of the validation split to each epoch's logs.

    Args:
        x_val: What the model takes (pixels, or cached features when only the head trains).
        y_val: Integer labels.
        classes: Class names, in label order.
        batch_size: Prediction batch size.
    """

    def __init__(
        self, x_val: np.ndarray, y_val: np.ndarray, classes: list[str], batch_size: int
    ) -> None:
        super().__init__()
        self.x_val, self.y_val = x_val, np.asarray(y_val)
        self.classes, self.batch_size = list(classes), batch_size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        probs = self.model.predict(self.x_val, batch_size=self.batch_size, verbose=0)
        logs.update(class_metrics(self.y_val, np.argmax(probs, axis=1), self.classes))
