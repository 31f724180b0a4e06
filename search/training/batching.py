"""Feeding a fit in batches of one shape on the backend where each shape costs a compilation.

On JAX every new input shape compiles the step again: seconds on a CPU for each of the
train, test and predict steps. A fit over N images in batches of B ends each epoch with a
partial batch, so Keras would compile its train step twice and its test step twice
(mobilenet_v3_small at 64 px on 2 CPU cores: 7 s for each train step). On JAX, therefore:

- training takes full batches only, reshuffled every epoch, so that every image takes part
  over the epochs (`FullBatches`);
- prediction pads the last batch to full size and drops the padded rows (`predict`);
- validation runs as the first callback (`PaddedValidation`) over those padded predictions,
  with the model's own loss on the real rows only, so `val_loss` and `val_accuracy` are exact.

TensorFlow traces one graph for every batch size and PyTorch compiles nothing, so they keep
Keras' own handling of arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.backend import backend_name, keras_module

keras = keras_module()


def fixed_shapes() -> bool:
    """Whether this backend compiles a step per input shape (JAX)."""
    return backend_name() == "jax"


class FullBatches(keras.utils.PyDataset):
    """Shuffled full batches of (x, y) or (x, y, class weights); the remainder of each
    epoch's shuffle is left out of that epoch only. A split smaller than one batch is one
    batch."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        class_weight: dict[int, float] | None,
        seed: int,
    ) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = max(1, min(batch_size, len(y)))
        self.weights = (
            None
            if class_weight is None
            else np.array([class_weight[int(c)] for c in labels], np.float32)
        )
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(y))

    def __len__(self) -> int:
        return len(self.y) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.weights is None:
            return self.x[rows], self.y[rows]
        return self.x[rows], self.y[rows], self.weights[rows]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))


def fit_inputs(
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    class_weight: dict[int, float] | None,
    seed: int,
) -> dict[str, Any]:
    """The training part of `Model.fit`'s arguments for this backend."""
    if fixed_shapes():
        return {"x": FullBatches(x, y, labels, batch_size, class_weight, seed)}
    return {
        "x": x,
        "y": y,
        "batch_size": batch_size,
        "class_weight": class_weight,
        "shuffle": True,
    }


def repeat_last(x: np.ndarray, missing: int) -> np.ndarray:
    """`x` with its last row repeated `missing` more times (padding for one batch shape)."""
    return np.concatenate([x, np.repeat(x[-1:], missing, axis=0)]) if missing > 0 else x


def pad_rows(x: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """`x` with its last row repeated up to a multiple of the batch size, and the batch size
    used (no larger than `x`)."""
    size = max(1, min(batch_size, len(x)))
    return repeat_last(x, -len(x) % size), size


def predict(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict` in batches of one shape on JAX (one compilation), as is elsewhere."""
    if not fixed_shapes() or len(x) == 0:
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    padded, size = pad_rows(x, batch_size)
    return np.asarray(model.predict(padded, batch_size=size, verbose=0))[: len(x)]


def predict_on_batches(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict_on_batch` over `x` in batches of one shape (the last padded), through
    one step traced for any batch size (`trace_predict_any_batch`): later calls on another
    batch size, such as a footprint's single image of the same dtype, reuse it."""
    from models.backend import trace_predict_any_batch

    padded, size = pad_rows(x, batch_size)
    trace_predict_any_batch(model, x.shape[1:], x.dtype)
    parts = [
        np.asarray(model.predict_on_batch(padded[i : i + size]))
        for i in range(0, len(padded), size)
    ]
    return np.concatenate(parts)[: len(x)]


class PaddedValidation(keras.callbacks.Callback):
    """Writes `val_loss` and `val_accuracy` into each epoch's logs from one padded
    prediction pass (and hands the probabilities to `after`, for metrics Keras lacks).
    Must come first among the callbacks, as `ValidationMetrics`."""

    def __init__(
        self,
        x_val: np.ndarray,
        y_val: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        after: Any = None,
    ) -> None:
        super().__init__()
        self.n = len(labels)
        self.x, self.size = pad_rows(x_val, batch_size)
        self.y, self.labels, self.after = y_val, np.asarray(labels), after

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or self.n == 0:
            return
        probs = np.asarray(self.model.predict(self.x, batch_size=self.size, verbose=0))
        probs = probs[: self.n]
        loss = self.model.loss(self.y, probs)
        logs["val_loss"] = float(keras.ops.convert_to_numpy(loss))
        logs["val_accuracy"] = float(np.mean(np.argmax(probs, axis=1) == self.labels))
        if self.after is not None:
            logs.update(self.after(probs))
