"""`tumor-search predict`: class probabilities from a saved model for image files or folders.

A ``.keras`` model runs in Keras; an ``.onnx`` model runs in onnxruntime through
`tumor_predict` (the TensorFlow-free predictor) without importing Keras, TensorFlow or
Optuna. Both find, decode and report images with `tumor_predict.predict`'s code; with a
``.keras`` model DICOM files and NIfTI volumes are read too, a prediction per slice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tumor_predict import predict as shared
from tumor_predict.errors import PredictError
from tumor_predict.predict import Prediction

from common.progress import log
from data.medical import MedicalSettings, NotAnImage, is_medical, read_slices, slice_path
from search.errors import InputError

MODEL_SUFFIXES = (".keras", ".onnx")


@contextmanager
def as_input_error() -> Iterator[None]:
    """Turn the predictor's errors into `InputError`: one line on stderr, exit code 2."""
    try:
        yield
    except PredictError as exc:
        raise InputError(str(exc)) from None


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
    """`tumor_predict.predict.collect_images`, raising `InputError`."""
    with as_input_error():
        return shared.collect_images(paths)


def decode_images(
    files: list[Path], direct: set[Path], size: int, purpose: str
) -> tuple[np.ndarray, list[Path]]:
    """`tumor_predict.predict.decode_images` (skipped files logged), raising `InputError`."""
    with as_input_error():
        return shared.decode_images(files, direct, size, purpose, warn=log)


def predict_paths(
    model_path: str,
    paths: list[str],
    batch_size: int = 32,
    medical: MedicalSettings | None = None,
) -> list[Prediction]:
    """Predict every image, and every slice of DICOM files and NIfTI volumes (`.keras`
    models; read with `medical`, the study config's settings); a file named directly that
    is not an image is an error, an unreadable file inside a folder is skipped with a
    warning.

    Raises:
        InputError: a bad model file or path, or no readable image.
    """
    suffix = Path(model_path).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise InputError(f"model file must be a .keras or .onnx file: {model_path}")
    if suffix == ".onnx":
        with as_input_error():
            return shared.predict_paths(model_path, paths, batch_size, warn=log)
    return _predict_keras(model_path, paths, batch_size, medical or MedicalSettings())


def collect_inputs(paths: list[str]) -> list[Path]:
    """`collect_images`, with the DICOM files and NIfTI volumes in folders too.

    Raises:
        InputError: a path that does not exist, or a folder without images.
    """
    from tumor_predict.decode import IMAGE_EXTENSIONS, is_hidden_or_junk

    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if not path.is_dir():
            files += collect_images([text])
            continue
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not is_hidden_or_junk(p.name)
            and (p.suffix.lower() in IMAGE_EXTENSIONS or is_medical(p.name))
        )
        if not found:
            raise InputError(f"no image files in folder {path}")
        files += found
    return files


def decode_inputs(
    files: list[Path], direct: set[Path], size: int, medical: MedicalSettings
) -> tuple[np.ndarray, list[str]]:
    """Images decoded as `decode_images` does, and a DICOM or NIfTI file's slices each
    under `FILE#KEY` (`data.medical.slice_path`); a file without an image is skipped with a
    line, or an error when named directly."""
    from tumor_predict.decode import decode_pixels
    from tumor_predict.errors import ImageError

    from data.decode import decode_slice
    from data.errors import DataError

    pixels: list[np.ndarray] = []
    names: list[str] = []
    for path in files:
        try:
            if is_medical(path.name):
                slices = read_slices(path, medical)
                pixels += [decode_slice(found.pixels, size) for found in slices]
                names += [slice_path(str(path), found.key) for found in slices]
            else:
                pixels.append(decode_pixels(path, size))
                names.append(str(path))
        except (ImageError, NotAnImage, DataError) as exc:
            if path in direct:
                reason = f" ({exc})" if isinstance(exc, NotAnImage) else ""
                raise InputError(f"not an image: {path}{reason}") from None
            log(f"skipping unreadable file {path}")
    if not names:
        raise InputError("no readable image to predict")
    return np.stack(pixels), names


def _predict_keras(
    model_path: str, paths: list[str], batch_size: int, medical: MedicalSettings
) -> list[Prediction]:
    from data.discovery import is_readable_image
    from search.training.batching import predict

    files = collect_inputs(paths)
    direct = {Path(p).expanduser() for p in paths}
    for path in direct:
        if path.is_file() and not is_medical(path.name) and not is_readable_image(path):
            raise InputError(f"not an image: {path}")  # before the slow model load
    model = load_model(model_path)
    names = class_names(model)
    pixels, kept = decode_inputs(files, direct, int(model.input_shape[1]), medical)
    probs = predict(model, pixels.astype("float32"), batch_size)
    return shared.to_predictions(kept, probs, names)
