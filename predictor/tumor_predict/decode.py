"""Decoding image files to uint8 RGB arrays with Pillow: the one decoder of tumor-search.

Training (`data.decode`) and both predictors decode through `decode_pixels`, so a model sees
the same pixels in production as in its search. Arrays hold raw 0-255 pixels: every model's
preprocessing lives inside its graph.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from tumor_predict.errors import ImageError

# File name endings read as images (lower case), in a dataset and by `predict`.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
# Files that operating systems and tools leave in folders; never images.
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


def is_hidden_or_junk(name: str) -> bool:
    """A dotfile or a file such as ``Thumbs.db`` that tools leave behind."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, P, RGBA, LA, CMYK, I;16, ...) to RGB.

    Transparent pixels become black (the background of an MRI slice); 16-bit and 32-bit
    grayscale is rescaled to 8 bits rather than clipped.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        low, high = float(arr.min()), float(arr.max())
        scaled = (arr - low) / (high - low) * 255.0 if high > low else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_pixels(
    path: str | os.PathLike[str],
    size: int,
    convert: Callable[[Image.Image], Image.Image] = to_rgb,
) -> np.ndarray:
    """Decode one image file to a ``(size, size, 3)`` uint8 RGB array.

    Args:
        path: The image file.
        size: Side of the square output, in pixels (bilinear resize).
        convert: The mode conversion to RGB (`to_rgb`).

    Raises:
        ImageError: the file cannot be read or is not an image.
    """
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # let libjpeg skip detail we would discard
            rgb = convert(img)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc
