"""A study's train and validation images rearranged: cross-validation folds, or both splits
as one training split (a refit), each under a fingerprint of its own."""

from __future__ import annotations

import hashlib

import numpy as np

from search.study_data import TrainVal


def pool_arrays(train_val: TrainVal) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of train and validation together."""
    x = np.concatenate([train_val.x_train, train_val.x_val])
    y = np.concatenate([train_val.y_train, train_val.y_val])
    return x, y


def subset_fingerprint(base: str, tag: str, train: np.ndarray, held_out: np.ndarray) -> str:
    """A fingerprint for a rearranged pool: the feature cache keys entries by the data
    fingerprint, so a fold (or a refit) must never share the study's own key."""
    digest = hashlib.sha256(f"{base}|{tag}|".encode())
    digest.update(np.asarray(train, dtype=np.int64).tobytes())
    digest.update(b"|")
    digest.update(np.asarray(held_out, dtype=np.int64).tobytes())
    return digest.hexdigest()


def subset_train_val(
    train_val: TrainVal,
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    held_out: np.ndarray,
    tag: str,
) -> TrainVal:
    """A `TrainVal` that trains on ``x[train]`` and validates on ``x[held_out]``."""
    return TrainVal(
        x_train=x[train],
        y_train=y[train],
        x_val=x[held_out],
        y_val=y[held_out],
        classes=train_val.classes,
        image_size=train_val.image_size,
        seconds=0.0,
        from_cache=train_val.from_cache,
        fingerprint=subset_fingerprint(train_val.fingerprint, tag, train, held_out),
    )
