"""Backbone features computed once, for trials whose backbone is frozen.

A frozen backbone without augmentation sees the same pixels every epoch of every trial, so
its pooled features are the same too. They are computed once per (backbone, weights, input
size, data fingerprint) and split, stored under the cache folder, and trials train only the
head on them. One process computes an entry while the others wait for it and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.cache import atomic_save_arrays, atomic_write_bytes, cache_root, entry_lock, load_arrays
from data.progress import Progress, log
from models.backend import keras_module
from models.builder import build_backbone, build_preprocessing
from models.registry import get_backbone
from models.weights import WeightsPolicy

BATCH = 64


@dataclass(frozen=True)
class Features:
    train: np.ndarray
    val: np.ndarray
    extractor_params: int
    hit: bool
    seconds: float


def cache_key(backbone: str, weights: WeightsPolicy, image_size: int, fingerprint: str) -> str:
    keras = keras_module()
    identity = {
        "backbone": backbone,
        "weights": weights.identity(),
        "image_size": image_size,
        "data": fingerprint,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "dtype_policy": keras.mixed_precision.dtype_policy().name,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def entry_dir(key: str, cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / "features" / key


def build_extractor(backbone: str, image_size: int, weights: WeightsPolicy) -> Any:
    """Raw pixels -> the frozen backbone's pooled features, in inference mode."""
    keras = keras_module()
    record = get_backbone(backbone)
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    net = build_backbone(record, image_size, weights)
    net.trainable = False
    outputs = net(build_preprocessing(record)(inputs), training=False)
    return keras.Model(inputs, outputs, name=f"{backbone}_features")


def _extract(extractor: Any, x: np.ndarray, label: str) -> np.ndarray:
    out = []
    with Progress(len(x), label, min_total=256) as bar:
        for start in range(0, len(x), BATCH):
            batch = x[start : start + BATCH].astype("float32")
            out.append(np.asarray(extractor(batch, training=False), dtype=np.float32))
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, extractor.output_shape[-1]), np.float32)


def get_features(
    backbone: str,
    weights: WeightsPolicy,
    image_size: int,
    fingerprint: str,
    x_train: np.ndarray,
    x_val: np.ndarray,
    cache_dir: str | None = None,
) -> Features:
    """The backbone's features of the train and validation images, from the cache if there.

    Args:
        backbone: Registry name.
        weights: The (pretrained) weights policy; part of the key by content.
        image_size: Input side in pixels.
        fingerprint: The data's fingerprint; part of the key.
        x_train, x_val: The decoded images, used only when the entry must be computed.
        cache_dir: Cache folder (default: see `data.cache.cache_root`).
    """
    start = time.perf_counter()
    folder = entry_dir(cache_key(backbone, weights, image_size, fingerprint), cache_dir)
    path = folder / "features.npz"
    cached = load_arrays(path)
    if cached is None:
        with entry_lock(path):
            cached = load_arrays(path)  # another process may have finished it meanwhile
            if cached is None:
                keras = keras_module()
                extractor = build_extractor(backbone, image_size, weights)
                log(
                    f"computing {backbone} features for {len(x_train) + len(x_val)} images (cached for later trials)"
                )
                train = _extract(extractor, x_train, f"{backbone} features (train)")
                val = _extract(extractor, x_val, f"{backbone} features (val)")
                params = np.asarray(extractor.count_params(), dtype=np.int64)
                atomic_save_arrays(path, train=train, val=val, extractor_params=params)
                meta = {
                    "backbone": backbone,
                    "weights": str(weights),
                    "image_size": image_size,
                    "data": fingerprint,
                }
                atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=2).encode())
                del extractor
                keras.backend.clear_session()
                return Features(train, val, int(params), False, time.perf_counter() - start)
    return Features(
        cached["train"],
        cached["val"],
        int(cached["extractor_params"]),
        True,
        time.perf_counter() - start,
    )
