"""What a trained model costs to deploy: latency per image, parameter count, saved size.

Measured on the worker's own device after a trial finishes (the trial records them as user
attributes and `objective.constraints` may limit them). A trial that trained a head on
cached features never builds its whole model: its footprint is the feature extractor's,
measured once per worker process, `combine`-d with its head's. Latency is timed through the
compiled inference step (`predict_on_batch`: a traced `tf.function`, a jitted call on JAX),
never through `Model.predict`, whose per-call set-up (a data adapter, callbacks, a progress
bar) would dwarf a small network's arithmetic.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

WARMUP_CALLS = 3
TIMED_CALLS = 30
FOOTPRINT_KEYS = ("latency_ms", "params_m", "size_mb")


@dataclass(frozen=True)
class Footprint:
    """Attributes:
    latency_ms: Median milliseconds per image at batch 1 (after warm-up calls).
    params_m: Parameter count in millions (every weight, trainable or not).
    size_mb: Size of the model's weights saved as arrays (``.npz``) in MB (10^6 bytes): what
        every export format carries, without the optimizer state that ``.keras`` and Keras'
        ``.weights.h5`` files add (twice the weights again with Adam).
    calls: How many calls were timed.
    """

    latency_ms: float
    params_m: float
    size_mb: float
    calls: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def describe(values: Mapping[str, Any]) -> str | None:
    """``1.23 ms per image at batch 1, 0.456 M parameters, 1.82 MB`` from a mapping that holds
    `FOOTPRINT_KEYS` (a trial's user attributes); None when no latency was measured."""
    if "latency_ms" not in values:
        return None
    return (
        f"{values['latency_ms']:.2f} ms per image at batch 1, "
        f"{values.get('params_m', 0.0):.3f} M parameters, {values.get('size_mb', 0.0):.2f} MB"
    )


def time_batch_one(model: Any, image_size: int | None, calls: int = TIMED_CALLS) -> list[float]:
    """Seconds per call of `model.predict_on_batch` on one raw-pixel image (or, with no
    `image_size`, one random input of the model's own shape: a head's features), after
    warm-up."""
    rng = np.random.default_rng(0)
    if image_size is None:
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        image = rng.normal(size=(1, *shape)).astype(np.float32)
    else:
        # Raw pixels as images load (uint8): the dtype of a trial's validation images, whose
        # predictions (`predict_on_batches`) traced a step that this call can reuse.
        image = rng.integers(0, 256, size=(1, image_size, image_size, 3), dtype=np.uint8)
    for _ in range(WARMUP_CALLS):  # the first call traces or compiles the step
        np.asarray(model.predict_on_batch(image))
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(image))  # waits for the device's result
        seconds.append(time.perf_counter() - start)
    return seconds


def saved_size_mb(model: Any) -> float:
    """The size in MB of `model`'s weights saved as an uncompressed ``.npz`` (written to
    memory, so a full disk cannot fail a finished trial): every weight, trainable or not,
    and no optimizer state."""
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    return buffer.getbuffer().nbytes / 1e6


def measure(model: Any, image_size: int | None, calls: int = TIMED_CALLS) -> Footprint:
    """Latency at batch 1 (median of `calls`), parameters and saved size of `model` (a whole
    model on `image_size` pixels, or with None a part on inputs of its own shape)."""
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    seconds = time_batch_one(model, image_size, calls)
    return Footprint(
        latency_ms=round(statistics.median(seconds) * 1000.0, 4),
        params_m=round(int(model.count_params()) / 1e6, 6),
        size_mb=round(saved_size_mb(model), 6),
        calls=calls,
    )


def combine(first: Footprint, then: Footprint) -> Footprint:
    """The footprint of a model made of two parts called one after the other (a frozen
    feature extractor, then the head trained on its features): latencies, parameters and
    saved sizes add (the size to within the bytes of one ``.npz`` directory)."""
    return Footprint(
        latency_ms=round(first.latency_ms + then.latency_ms, 4),
        params_m=round(first.params_m + then.params_m, 6),
        size_mb=round(first.size_mb + then.size_mb, 6),
        calls=min(first.calls, then.calls),
    )
