"""Small image files written by hand for layout and decoding tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(
    path: Path, seed: int, mode: str = "L", size: int = 24, fmt: str | None = None
) -> Path:
    """Write a small random image in `mode` (L, RGB, RGBA, P, CMYK, I;16) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    if mode == "L":
        img = Image.fromarray(gray, "L")
    elif mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 200)
    else:
        img = Image.fromarray(np.stack([gray] * 3, -1), "RGB")
        if mode == "RGBA":
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(rng.integers(0, 256, size=(size, size), dtype=np.uint8)))
        elif mode != "RGB":
            img = img.convert(mode)
    img.save(path, format=fmt or ("PNG" if path.suffix == ".png" else "JPEG"))
    return path


def truncated_jpeg(path: Path, seed: int) -> Path:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(64, 64), dtype=np.uint8), "L").save(buffer, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def make_classes(root: Path, classes: list[str], n: int, seed: int = 0, ext: str = ".jpg") -> None:
    for ci, name in enumerate(classes):
        for i in range(n):
            write_image(root / name / f"img{i}{ext}", seed=seed * 1000 + ci * 100 + i)


def near_copy(source: Path, target: Path, how: str) -> Path:
    """Write a near copy of the image `source` to `target`: ``jpeg`` (re-encoded at
    quality 70), ``resize`` (15 % smaller), ``shift`` (2 px), ``brightness`` (+8 %) or
    ``png`` (re-saved losslessly)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as img:
        img = img.convert("L")
        if how == "resize":
            side = int(round(img.width * 0.85))
            img = img.resize((side, side), Image.Resampling.LANCZOS)
        elif how == "shift":
            img = img.transform(img.size, Image.Transform.AFFINE, (1, 0, 2, 0, 1, -2))
        elif how == "brightness":
            img = Image.fromarray(np.clip(np.asarray(img) * 1.08, 0, 255).astype(np.uint8))
        if how == "png":
            img.save(target, format="PNG")
        else:
            img.save(target, format="JPEG", quality=70 if how == "jpeg" else 90)
    return target
