"""Backbone features computed once per image, for trials whose backbone is frozen.

A frozen backbone without augmentation sees the same pixels every epoch of every trial, so
its pooled features are the same too. They are computed once per image, stored under the
cache folder, and trials train only the head on them. One process computes an entry's
missing images while the others wait for it and reuse them.

An entry's key holds everything that decides the extractor: backbone and its registry
record, the bytes of the weights file actually loaded (for ``imagenet``, the weights
folder's file that `weights import` wrote, else the one Keras keeps under its home), input
size, Keras and backend versions, the dtype policy and the version of the code that
computes them (`FEATURES_VERSION`). Weights that cannot be known by their bytes are never cached.
Within an entry each image is found by the content hash of its decoded pixels
(`image_ids`), so a study's run, every finalize fold, the refit on train+val and any later
split of the same images reuse what was computed once, and an image decoded otherwise (a
new decoder, another size) is simply another image.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
import weakref
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
    entry_lock,
    load_arrays,
    touch,
)
from models.backend import keras_module
from models.builder import build_backbone
from models.preprocessing import build_preprocessing
from models.registry import TOP, Backbone, get_backbone
from models.weights import WeightsPolicy, keras_models_dir
from models.weights_store import stored_weights

BATCH = 64


@dataclass(frozen=True)
class Features:
    train: np.ndarray
    val: np.ndarray
    extractor_params: int
    hit: bool  # every image was in the cache
    seconds: float
    computed: int = 0  # images whose features were computed now


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


# The version of the code that computes cached features (`build_extractor` and the builder
# functions it calls, `_compute`, `WeightsPolicy.load_into`). Bump it with any change there
# that changes a feature, so that entries the old code filled miss instead of being served.
FEATURES_VERSION = 1


def key_parts(
    backbone: str, weights: WeightsPolicy, image_size: int, feature_layer: str = TOP
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
        "feature_layer": feature_layer,
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": _library_version(backend),
        "dtype_policy": keras.mixed_precision.dtype_policy().name,
        "code": FEATURES_VERSION,
    }


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cache_key(
    backbone: str, weights: WeightsPolicy, image_size: int, feature_layer: str = TOP
) -> str | None:
    """The entry's key, or None when the weights cannot be known by their bytes."""
    parts = key_parts(backbone, weights, image_size, feature_layer)
    return None if parts is None else _digest(parts)


def entry_dir(key: str, cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / FEATURES / key


def build_extractor(
    backbone: str, image_size: int, weights: WeightsPolicy, feature_layer: str = TOP
) -> Any:
    """Raw pixels -> the frozen backbone's pooled features (at `feature_layer`), in
    inference mode."""
    keras = keras_module()
    record = get_backbone(backbone)
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    net = build_backbone(record, image_size, weights, feature_layer)
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


ID_BYTES = 16
_IDS: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _forget(key: int, dead: weakref.ref) -> None:
    if _IDS.get(key, (None,))[0] is dead:
        del _IDS[key]


def image_ids(x: np.ndarray) -> np.ndarray:
    """One content hash per image, ``(len(x), 16)`` bytes: SHA-256 of its dtype, shape and
    decoded pixels, the key of its row within an entry.

    Hashed once per array object (about 0.1 ms per 224 px image): a trial's arrays are the
    worker's decoded splits, which nothing changes in place.
    """
    memo = _IDS.get(id(x))
    if memo is not None and memo[0]() is x:
        return memo[1]
    head = f"{x.dtype.str}{tuple(x.shape[1:])}".encode()
    ids = np.empty((len(x), ID_BYTES), np.uint8)
    for i, row in enumerate(x):
        digest = hashlib.sha256(head)
        digest.update(np.ascontiguousarray(row).data)
        ids[i] = np.frombuffer(digest.digest()[:ID_BYTES], np.uint8)
    key = id(x)
    try:
        ref = weakref.ref(x, lambda dead: _forget(key, dead))
    except TypeError:  # not weakly referable: hash again next time
        return ids
    _IDS[key] = (ref, ids)
    return ids


def _compute(extractor: Any, backbone: str, x: np.ndarray, of: int) -> np.ndarray:
    """The features of the images `x` (the `of` images asked for lack only these)."""
    log(f"computing {backbone} features for {len(x)} of {of} images (cached for later trials)")
    return _extract(extractor, x, f"{backbone} features")


def _rows(cached: dict[str, np.ndarray] | None) -> dict[bytes, int]:
    """Row of each image id in an entry's arrays."""
    if cached is None or "ids" not in cached:
        return {}
    return {row.tobytes(): i for i, row in enumerate(cached["ids"])}


def _lookup(
    cached: dict[str, np.ndarray] | None, rows: dict[bytes, int], ids: np.ndarray
) -> np.ndarray | None:
    """The cached features of the images `ids`, in their order; None if any is missing."""
    if cached is None:
        return None
    index = [rows.get(row.tobytes(), -1) for row in ids]
    if -1 in index:
        return None
    return cached["features"][np.asarray(index, dtype=np.int64)]


def _features(
    cached: dict[str, np.ndarray], ids: tuple[np.ndarray, np.ndarray], start: float, computed: int
) -> Features | None:
    if "ids" not in cached:
        return None
    rows = _rows(cached)
    train, val = _lookup(cached, rows, ids[0]), _lookup(cached, rows, ids[1])
    if train is None or val is None:
        return None
    params = int(cached["extractor_params"])
    seconds = time.perf_counter() - start
    return Features(train, val, params, computed == 0, seconds, computed)


def _missing(
    cached: dict[str, np.ndarray] | None,
    x: tuple[np.ndarray, np.ndarray],
    ids: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The images the entry lacks (each once, however often it is asked for) and their ids."""
    rows, seen = _rows(cached), set()
    parts, new_ids = [], []
    for pixels, part_ids in zip(x, ids, strict=True):
        take = []
        for i, row in enumerate(part_ids):
            key = row.tobytes()
            if key not in rows and key not in seen:
                seen.add(key)
                take.append(i)
                new_ids.append(row)
        parts.append(pixels[np.asarray(take, dtype=np.int64)])
    ids_out = np.asarray(new_ids, dtype=np.uint8).reshape(-1, ID_BYTES)
    return np.concatenate(parts), ids_out


def _merged(
    cached: dict[str, np.ndarray] | None, ids: np.ndarray, features: np.ndarray, params: int
) -> dict[str, np.ndarray]:
    """The entry's arrays with the new images' rows added."""
    if cached is not None and "ids" in cached:
        ids = np.concatenate([cached["ids"], ids])
        features = np.concatenate([cached["features"], features.astype(cached["features"].dtype)])
    return {"ids": ids, "features": features, "extractor_params": np.asarray(params, np.int64)}


def _store(
    folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], new: bool = True
) -> None:
    """Write an entry; the trial goes on without it on a full disk. A new entry then leaves
    none of its files; an entry that was only growing keeps its old file, whole (the
    temporary file of the larger one is removed by `atomic_path`)."""
    path, meta_path = folder / FEATURES_FILE, folder / "meta.json"
    with skip_when_full("feature cache", folder, remove=(path, meta_path) if new else ()):
        atomic_save_arrays(path, **arrays)
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())


def _read(
    path: Path, ids: tuple[np.ndarray, np.ndarray], start: float
) -> tuple[dict[str, np.ndarray] | None, Features | None]:
    """An entry's arrays, and the features asked for if it holds them all."""
    cached = load_arrays(path)
    return cached, (_features(cached, ids, start, 0) if cached is not None else None)


def _add_missing(
    extractor: Any,
    backbone: str,
    folder: Path,
    meta: dict[str, Any],
    cached: dict[str, np.ndarray] | None,
    x: tuple[np.ndarray, np.ndarray],
    ids: tuple[np.ndarray, np.ndarray],
    start: float,
) -> Features:
    """Compute the images the entry lacks, store the entry with them, return all asked for."""
    images, new_ids = _missing(cached, x, ids)
    computed = _compute(extractor, backbone, images, len(x[0]) + len(x[1]))
    arrays = _merged(cached, new_ids, computed, extractor.count_params())
    _store(folder, arrays, meta, new=cached is None)
    result = _features(arrays, ids, start, len(new_ids))
    assert result is not None
    return result


def _uncached(
    extractor: Any, backbone: str, x: tuple[np.ndarray, np.ndarray], start: float
) -> Features:
    """Features computed and not stored (the weights cannot be known by their bytes)."""
    log(f"{backbone} features not cached: the weights file Keras loaded is unreadable")
    train = _extract(extractor, x[0], f"{backbone} features (train)")
    val = _extract(extractor, x[1], f"{backbone} features (val)")
    seconds = time.perf_counter() - start
    return Features(train, val, extractor.count_params(), False, seconds, len(train) + len(val))


def get_features(
    backbone: str,
    weights: WeightsPolicy,
    image_size: int,
    x_train: np.ndarray,
    x_val: np.ndarray,
    cache_dir: str | None = None,
    feature_layer: str = TOP,
) -> Features:
    """The backbone's features of the train and validation images, from the cache if there.

    Only images the cache lacks are computed (and added to it): a fold or a refit of a
    study's images after its run computes nothing.

    Args:
        backbone: Registry name.
        weights: The (pretrained) weights policy; part of the key by content.
        image_size: Input side in pixels.
        x_train, x_val: The decoded images; each is found in the cache by its pixels.
        cache_dir: Cache folder (default: see `data.cache.cache_root`).
        feature_layer: Where to take the features (`models.registry.TOP` or a cut).
    """
    start = time.perf_counter()
    keras = keras_module()
    x, ids = (x_train, x_val), (image_ids(x_train), image_ids(x_val))
    extractor = None
    if weights_identity(backbone, weights, image_size) is None:
        # Build first: Keras downloads the ImageNet file the key hashes (or says it cannot).
        extractor = build_extractor(backbone, image_size, weights, feature_layer)
    try:
        while True:
            parts = key_parts(backbone, weights, image_size, feature_layer)
            if parts is None:  # the weights Keras loaded cannot be read: compute, never cache
                if extractor is None:
                    extractor = build_extractor(backbone, image_size, weights, feature_layer)
                return _uncached(extractor, backbone, x, start)
            folder = entry_dir(_digest(parts), cache_dir)
            path = folder / FEATURES_FILE
            cached, found = _read(path, ids, start)
            if found is not None:
                touch(path)
                return found
            with entry_lock(path):
                cached, found = _read(path, ids, start)  # another process may have added them
                if found is not None:
                    return found
                if extractor is None:
                    extractor = build_extractor(backbone, image_size, weights, feature_layer)
                if key_parts(backbone, weights, image_size, feature_layer) != parts:
                    extractor = None  # the weights file changed meanwhile: load it again, rekey
                    keras.backend.clear_session()
                    continue
                meta = {**parts, "weights_policy": str(weights)}
                return _add_missing(extractor, backbone, folder, meta, cached, x, ids, start)
    finally:
        if extractor is not None:
            del extractor  # drop the last reference before Keras frees the graph
            keras.backend.clear_session()
