"""Backbone features computed once, for trials whose backbone is frozen.

A frozen backbone without augmentation sees the same pixels every epoch of every trial, so
its pooled features are the same too. They are computed once per key and split, stored under
the cache folder, and trials train only the head on them. One process computes an entry
while the others wait for it and reuse it.

The key holds everything that decides the features: backbone and its registry record, the
bytes of the weights file actually loaded (for ``imagenet``, the weights folder's file that
`weights import` wrote, else the one Keras keeps under its home), input size, data
fingerprint, Keras and backend versions, the dtype policy and a hash of the code that
computes them (`code_version`). Weights that cannot be known by their bytes are never cached.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.disk import skip_when_full
from common.progress import Progress, log
from data.cache import (
    FEATURES,
    FEATURES_FILE,
    atomic_save_arrays,
    atomic_write_bytes,
    cache_root,
    code_hash,
    entry_lock,
    load_arrays,
    touch,
)
from models.backend import keras_module
from models.builder import build_backbone
from models.preprocessing import build_preprocessing
from models.registry import Backbone, get_backbone
from models.weights import WeightsPolicy, keras_models_dir
from models.weights_store import stored_weights

BATCH = 64


@dataclass(frozen=True)
class Features:
    train: np.ndarray
    val: np.ndarray
    extractor_params: int
    hit: bool
    seconds: float


def keras_home() -> Path:
    """Keras's home as Keras itself resolved it (at import, from ``$KERAS_HOME``)."""
    try:
        from keras.src.backend.config import keras_home as home
    except ImportError:  # a Keras without this private accessor: read the variable ourselves
        return keras_models_dir().parent
    return Path(home())


def imagenet_weights_file(record: Backbone, image_size: int) -> Path | None:
    """The file Keras loads for ``weights: imagenet`` (None: the backbone has no such file)."""
    filename = record.imagenet_filename(image_size)
    if filename is None:
        return None
    home = keras_home()
    if not os.access(home, os.W_OK):  # keras.utils.get_file then keeps its files here
        home = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    return home / "models" / filename


@functools.cache
def _sha256(path: str, signature: tuple[int, ...]) -> str:
    """The file's content hash; `signature` (its stat) makes a rewritten file hash again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str | None:
    """The content hash of `path`, hashed once per process per version; None if missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return _sha256(str(path), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def weights_identity(backbone: str, weights: WeightsPolicy, image_size: int) -> str | None:
    """The bytes of the weights that `build_extractor` loads; None if they cannot be known."""
    if weights.kind == "none":
        return "none"
    if weights.kind == "file":
        assert weights.path is not None
        digest = file_sha256(weights.path)
    else:  # the weights folder's file first, as `build_backbone` loads it
        path = stored_weights(backbone) or imagenet_weights_file(get_backbone(backbone), image_size)
        digest = file_sha256(path) if path is not None else None
    return f"{weights.kind}:sha256:{digest}" if digest else None


@functools.cache
def _library_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def code_version() -> str:
    """A hash of the code that computes features (`data.cache.code_hash`), once per process."""
    return code_hash(build_extractor, _compute, WeightsPolicy.load_into)


def key_parts(
    backbone: str, weights: WeightsPolicy, image_size: int, fingerprint: str
) -> dict[str, Any] | None:
    """What identifies an entry (also written to its ``meta.json``); None: do not cache."""
    identity = weights_identity(backbone, weights, image_size)
    if identity is None:
        return None
    keras = keras_module()
    backend = keras.backend.backend()
    return {
        "backbone": get_backbone(backbone).to_dict(),
        "weights": identity,
        "image_size": image_size,
        "data": fingerprint,
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": _library_version(backend),
        "dtype_policy": keras.mixed_precision.dtype_policy().name,
        "code": code_version(),
    }


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cache_key(
    backbone: str, weights: WeightsPolicy, image_size: int, fingerprint: str
) -> str | None:
    """The entry's key, or None when the weights cannot be known by their bytes."""
    parts = key_parts(backbone, weights, image_size, fingerprint)
    return None if parts is None else _digest(parts)


def entry_dir(key: str, cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / FEATURES / key


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
    """The extractor's features of `x`, batch by batch with a progress bar. TensorFlow calls
    it eagerly (no graph to trace); JAX and PyTorch through `predict_on_batch` (jitted on JAX,
    where every batch is padded to one shape; without autograd on PyTorch)."""
    out = []
    backend = keras_module().backend.backend()
    with Progress(len(x), label, min_total=256) as bar:
        for start in range(0, len(x), BATCH):
            batch = x[start : start + BATCH].astype("float32")
            n = len(batch)
            if backend == "tensorflow":
                features = extractor(batch, training=False)
            else:
                if backend == "jax":
                    from search.training.batching import repeat_last

                    batch = repeat_last(batch, BATCH - n)
                features = extractor.predict_on_batch(batch)
            out.append(np.asarray(features, dtype=np.float32)[:n])
            bar.update(n)
    return np.concatenate(out) if out else np.zeros((0, extractor.output_shape[-1]), np.float32)


def _compute(extractor: Any, backbone: str, x_train: np.ndarray, x_val: np.ndarray) -> dict:
    """The arrays of one entry."""
    log(
        f"computing {backbone} features for {len(x_train) + len(x_val)} images (cached for later trials)"
    )
    return {
        "train": _extract(extractor, x_train, f"{backbone} features (train)"),
        "val": _extract(extractor, x_val, f"{backbone} features (val)"),
        "extractor_params": np.asarray(extractor.count_params(), dtype=np.int64),
    }


def _features(arrays: dict, hit: bool, start: float) -> Features:
    params = int(arrays["extractor_params"])
    return Features(arrays["train"], arrays["val"], params, hit, time.perf_counter() - start)


def _store(folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write an entry; a full disk leaves none of its files and the trial goes on without."""
    path, meta_path = folder / FEATURES_FILE, folder / "meta.json"
    with skip_when_full("feature cache", folder, remove=(path, meta_path)):
        atomic_save_arrays(path, **arrays)
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())


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
    keras = keras_module()
    extractor = None
    if weights_identity(backbone, weights, image_size) is None:
        # Build first: Keras downloads the ImageNet file the key hashes (or says it cannot).
        extractor = build_extractor(backbone, image_size, weights)
    try:
        while True:
            parts = key_parts(backbone, weights, image_size, fingerprint)
            if parts is None:  # the weights Keras loaded cannot be read: compute, never cache
                log(f"{backbone} features not cached: the weights file Keras loaded is unreadable")
                if extractor is None:
                    extractor = build_extractor(backbone, image_size, weights)
                return _features(_compute(extractor, backbone, x_train, x_val), False, start)
            folder = entry_dir(_digest(parts), cache_dir)
            path = folder / FEATURES_FILE
            cached = load_arrays(path)
            if cached is not None:
                touch(path)
                return _features(cached, True, start)
            with entry_lock(path):
                cached = load_arrays(path)  # another process may have finished it meanwhile
                if cached is not None:
                    return _features(cached, True, start)
                if extractor is None:
                    extractor = build_extractor(backbone, image_size, weights)
                if key_parts(backbone, weights, image_size, fingerprint) != parts:
                    extractor = None  # the weights file changed meanwhile: load it again, rekey
                    keras.backend.clear_session()
                    continue
                arrays = _compute(extractor, backbone, x_train, x_val)
                _store(folder, arrays, {**parts, "weights_policy": str(weights)})
                return _features(arrays, False, start)
    finally:
        if extractor is not None:
            del extractor  # drop the last reference before Keras frees the graph
            keras.backend.clear_session()
