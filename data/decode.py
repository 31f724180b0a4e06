"""Decoding images to uint8 RGB arrays, with a backbone-independent on-disk cache.

Arrays hold raw 0-255 pixels: every backbone's preprocessing lives inside its model graph.
The cache is keyed by the split manifest's fingerprint, the image size and the decode
pipeline (`pipeline_version`: Pillow, its JPEG library and the decoding code), so a changed
dataset or decoder gets a new cache and a second load of the same split does not decode again.
The pixel decoding itself lives in `tumor_predict.decode`, shared with the ONNX predictor.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tumor_predict.decode import decode_pixels, to_rgb
from tumor_predict.errors import ImageError

from common.disk import skip_when_full
from common.progress import Progress
from data.cache import (
    IMAGES,
    atomic_save_arrays,
    cache_root,
    entry_lock,
    load_arrays,
    touch,
)
from data.errors import DataError
from data.medical import MedicalSettings, is_medical, read_slice, split_slice_path
from data.split import ManifestEntry, SplitManifest


def decode_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Decode one image file to a ``(size, size, 3)`` uint8 RGB array
    (`tumor_predict.decode.decode_pixels`, the decoder both predictors use).

    Raises:
        DataError: the file cannot be read or is not an image.
    """
    try:
        return decode_pixels(path, size, to_rgb)
    except ImageError as exc:
        raise DataError(str(exc)) from exc


def decode_slice(pixels: np.ndarray, size: int) -> np.ndarray:
    """8-bit grayscale slice pixels (`data.medical`) to a ``(size, size, 3)`` uint8 RGB
    array, through the same conversion and resize as image files."""
    from PIL import Image

    rgb = to_rgb(Image.fromarray(pixels, "L"))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).copy()


def decode_entry(
    root: Path, rel: str, size: int, medical: MedicalSettings | None = None
) -> np.ndarray:
    """Decode an image of a dataset, a DICOM or NIfTI slice (``file#key``) included.

    Raises:
        DataError: the file cannot be read or holds no such image.
    """
    file, key = split_slice_path(rel)
    if not key and not is_medical(file):
        return decode_image(root / rel, size)
    return decode_slice(read_slice(root / file, key, medical or MedicalSettings()), size)


@dataclass(frozen=True)
class SplitArrays:
    """Decoded images of one split."""

    x: np.ndarray  # (n, size, size, 3) uint8
    y: np.ndarray  # (n,) int32 index into the manifest's classes
    from_cache: bool
    seconds: float


# The version of the code that turns files into cached pixels (`decode_image`, `to_rgb`,
# `decode_pixels`, `_decode_entries`). Bump it with any change there that changes a decoded
# byte, so that caches the old code filled miss instead of serving its pixels
# (tests/data/test_cache_keys.py pins the decoder's output on fixed images).
DECODE_VERSION = 1  # DICOM and NIfTI slices: `data.medical`, whose settings the fingerprint holds


@functools.cache
def pipeline_version() -> str:
    """What decides the decoded bytes besides the files: Pillow, libjpeg and our code
    (`DECODE_VERSION`). Computed once per process."""
    import PIL
    import PIL.features

    parts = {
        "pillow": PIL.__version__,
        "libjpeg": PIL.features.version("jpg"),  # its IDCT and draft scaling decide JPEG pixels
        "code": DECODE_VERSION,
    }
    return hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()[:16]


def cache_path(
    manifest: SplitManifest, split: str, size: int, cache_dir: str | None = None
) -> Path:
    """Where the decoded `split` of `manifest` at `size` pixels is cached."""
    folder = cache_root(cache_dir) / IMAGES / manifest.fingerprint[:24] / pipeline_version()
    return folder / f"{size}px" / f"{split}.npz"


def _decode_entries(
    root: Path,
    entries: tuple[ManifestEntry, ...],
    size: int,
    label: str,
    medical: MedicalSettings | None = None,
) -> np.ndarray:
    out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
    with (
        Progress(len(entries), label, min_total=200) as bar,
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
    ):
        decoded = pool.map(lambda e: decode_entry(root, e.path, size, medical), entries)
        for i, arr in enumerate(decoded):
            out[i] = arr
            bar.update()
    return out


def load_split(
    manifest: SplitManifest,
    root: str | os.PathLike[str],
    split: str,
    size: int,
    cache_dir: str | None = None,
) -> SplitArrays:
    """Decoded images and integer labels of one split, from the cache when it holds them.

    Args:
        manifest: The split manifest.
        root: The dataset root the manifest's relative paths start from.
        split: ``train``, ``val`` or ``test``.
        size: Side of the square images, in pixels.
        cache_dir: Cache folder (default: see `data.cache.cache_root`).
    """
    start = time.perf_counter()
    entries = manifest.split(split)
    path = cache_path(manifest, split, size, cache_dir)
    cached = load_arrays(path)
    if cached is not None:
        touch(path)
        return SplitArrays(cached["x"], cached["y"], True, time.perf_counter() - start)
    with entry_lock(path):
        cached = load_arrays(path)  # another process may have written it while we waited
        if cached is not None:
            return SplitArrays(cached["x"], cached["y"], True, time.perf_counter() - start)
        index = {name: i for i, name in enumerate(manifest.classes)}
        x = _decode_entries(
            Path(root), entries, size, f"decoding {split} at {size}px", manifest.decode
        )
        y = np.asarray([index[e.label] for e in entries], dtype=np.int32)
        with skip_when_full("decode cache", path.parent):  # a full disk: go on without it
            atomic_save_arrays(path, x=x, y=y)
    return SplitArrays(x, y, False, time.perf_counter() - start)
