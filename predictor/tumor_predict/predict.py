"""Classify image files and folders with an ONNX model: find, decode, predict.

`tumor-search predict` reuses `collect_images`, `decode_images` and `to_predictions`, so
both commands find, skip and report images alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumor_predict.decode import IMAGE_EXTENSIONS, decode_pixels, is_hidden_or_junk
from tumor_predict.errors import ImageError


@dataclass(frozen=True)
class Prediction:
    """One image's predicted class and its probability per class (rounded to 6 decimals)."""

    path: str
    label: str
    probabilities: dict[str, float]


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden_or_junk(path.name)


def collect_images(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly, and the image files inside named folders (recursively,
    skipping dotfiles and files such as ``Thumbs.db``).

    Raises:
        ImageError: a path that does not exist, or a folder without images.
    """
    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p))
            if not found:
                raise ImageError(f"no image files in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"no such file or folder: {path}")
    return files


def decode_images(
    files: Sequence[Path],
    direct: set[Path],
    size: int,
    purpose: str,
    warn: Callable[[str], None] = _warn,
) -> tuple[np.ndarray, list[Path]]:
    """Decode every image at the model's input size: a file named directly that does not
    decode is an error, one found in a folder is skipped with a line to `warn`.

    Raises:
        ImageError: a file named directly is no image, or no file decodes.
    """
    pixels, kept = [], []
    for path in files:
        try:
            pixels.append(decode_pixels(path, size))
            kept.append(path)
        except ImageError as exc:
            if path in direct:
                raise ImageError(f"not an image: {path}") from exc
            warn(f"skipping unreadable file {path}")
    if not kept:
        raise ImageError(f"no readable image to {purpose}")
    return np.stack(pixels), kept


def to_predictions(
    files: Sequence[Path], probabilities: np.ndarray, names: Sequence[str]
) -> list[Prediction]:
    """One `Prediction` a file from its row of class probabilities."""
    return [
        Prediction(
            str(path),
            names[int(np.argmax(row))],
            {name: round(float(p), 6) for name, p in zip(names, row, strict=True)},
        )
        for path, row in zip(files, probabilities, strict=True)
    ]


def predict_paths(
    model_path: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 32,
    warn: Callable[[str], None] = _warn,
) -> list[Prediction]:
    """Predict every image with an ONNX model; a file named directly that is not an image
    is an error, an unreadable file inside a folder is skipped with a line to `warn`.

    Raises:
        ModelFileError: the model file is missing or not a tumor-search ONNX classifier.
        ImageError: a missing path, a non-image named directly, or no readable image.
    """
    from tumor_predict.model import OnnxClassifier

    files = collect_images(paths)
    direct = {Path(p).expanduser() for p in paths}
    model = OnnxClassifier(model_path)
    pixels, kept = decode_images(files, direct, model.input_size, "predict", warn)
    return to_predictions(kept, model.predict(pixels, batch_size), model.class_names)
