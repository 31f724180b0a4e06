"""`tumor-search predict`: class probabilities from a saved model for image files or folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import log
from data.decode import decode_image
from data.discovery import IMAGE_EXTENSIONS, JUNK_NAMES, is_readable_image
from data.errors import DataError
from search.errors import InputError


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    probabilities: dict[str, float]


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a saved `.keras` model in Keras' safe mode (no arbitrary code).

    Raises:
        InputError: missing file, or not a model Keras can load safely.
    """
    from models import layers  # noqa: F401 - registers our serialisable layers
    from models.backend import keras_module

    source = Path(path).expanduser()
    if not source.is_file():
        raise InputError(f"model file not found: {source}")
    if source.suffix != ".keras":
        raise InputError(f"model file must be a .keras file saved by train-best: {source}")
    keras = keras_module()
    try:
        return keras.saving.load_model(source, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors ... by cause
        raise InputError(
            f"cannot load model {source}: {' '.join(str(exc).split())[:300]}"
        ) from None


def class_names(model: Any) -> list[str]:
    try:
        return list(model.get_layer("class_probabilities").class_names)
    except ValueError:
        return [str(i) for i in range(int(model.output_shape[-1]))]


def collect_images(paths: list[str]) -> list[Path]:
    """Image files named directly, and the image files inside named folders (recursively).

    Raises:
        InputError: a path that does not exist, or a folder without images.
    """
    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not p.name.startswith(".")
                and p.name.lower() not in JUNK_NAMES
            )
            if not found:
                raise InputError(f"no image files in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"no such file or folder: {path}")
    return files


def decode_images(
    files: list[Path], direct: set[Path], size: int, purpose: str
) -> tuple[np.ndarray, list[Path]]:
    """Decode every image at the model's input size: a file named directly that does not
    decode is an error, one found in a folder is skipped with a log line.

    Raises:
        InputError: a file named directly is no image, or no file decodes.
    """
    pixels, kept = [], []
    for path in files:
        try:
            pixels.append(decode_image(path, size))
            kept.append(path)
        except DataError as exc:
            if path in direct:
                raise InputError(f"not an image: {path}") from exc
            log(f"skipping unreadable file {path}")
    if not kept:
        raise InputError(f"no readable image to {purpose}")
    return np.stack(pixels), kept


def predict_paths(model_path: str, paths: list[str], batch_size: int = 32) -> list[Prediction]:
    """Predict every image; a file named directly that is not an image is an error, an
    unreadable file inside a folder is skipped with a warning."""
    files = collect_images(paths)
    direct = {Path(p).expanduser() for p in paths}
    for path in direct:
        if path.is_file() and not is_readable_image(path):
            raise InputError(f"not an image: {path}")
    model = load_model(model_path)
    size = int(model.input_shape[1])
    names = class_names(model)
    pixels, kept = decode_images(files, direct, size, "predict")
    from search.training.batching import predict

    probs = predict(model, pixels.astype("float32"), batch_size)
    out = []
    for path, row in zip(kept, probs, strict=True):
        out.append(
            Prediction(
                str(path),
                names[int(np.argmax(row))],
                {name: round(float(p), 6) for name, p in zip(names, row, strict=True)},
            )
        )
    return out
