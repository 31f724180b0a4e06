"""`tumor-search explain`: Grad-CAM overlays that show where a saved model looked.

Images are found, checked and decoded the way `predict` does (`search.results.predict`), at
the model's input size, raw 0-255 RGB: every image is checked before the first overlay is
written, and each overlay is written atomically. `write_examples` picks, per class, one
correctly and one wrongly classified test image for the train-best report.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.progress import Progress, log
from data.discovery import is_readable_image
from search.errors import InputError
from search.results.outputs import check_writable_dir, make_out_dir, write_result
from search.results.predict import class_names, collect_images, decode_images, load_model
from search.training.batching import predict

EXAMPLES_DIR = "explain"
DISPLAY_SIZE = 256  # overlays are drawn at least this wide, whatever the model's input
TITLE_HEIGHT = 22
BATCH_SIZE = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._()+-]+")


@dataclass(frozen=True)
class Explanation:
    """One image's overlay: the image, the predicted class and its probability."""

    path: str
    label: str
    probability: float
    overlay: str


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """The "jet" colour map (blue, cyan, yellow, red) of values in [0, 1], as uint8 RGB."""
    h = np.clip(np.asarray(heat, np.float32), 0.0, 1.0)[..., None]
    centres = np.asarray([0.75, 0.5, 0.25], np.float32)  # where red, green, blue peak
    rgb = np.clip(1.5 - np.abs(4.0 * (h - centres)), 0.0, 1.0)
    return (rgb * 255.0).round().astype(np.uint8)


def overlay_png(pixels: np.ndarray, heatmap: np.ndarray, title: str) -> bytes:
    """The image with its Grad-CAM map blended in (stronger where the map is hot), under a
    title band; PNG bytes.

    Args:
        pixels: ``(size, size, 3)`` uint8 RGB, the model's input.
        heatmap: ``(h, w)`` Grad-CAM map in [0, 1] at any resolution.
        title: The line drawn above the image.
    """
    from models.gradcam import upsample

    side = max(DISPLAY_SIZE, int(pixels.shape[0]))
    base = np.asarray(
        Image.fromarray(np.asarray(pixels, np.uint8)).resize(
            (side, side), Image.Resampling.BILINEAR
        ),
        np.float32,
    )
    heat = upsample(heatmap, side)
    alpha = 0.6 * heat[..., None]
    blended = (1.0 - alpha) * base + alpha * heat_colours(heat).astype(np.float32)
    canvas = Image.new("RGB", (side, side + TITLE_HEIGHT), (0, 0, 0))
    canvas.paste(Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)), (0, TITLE_HEIGHT))
    font = ImageFont.load_default(size=14)
    ImageDraw.Draw(canvas).text((6, 3), title, fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _title(label: str, probability: float, true_label: str | None = None) -> str:
    text = f"{label} {probability:.1%}"
    return text if true_label is None else f"{text} (true: {true_label})"


def safe_name(text: str) -> str:
    """`text` with every run of characters unsafe in a file name replaced by ``_``."""
    return _UNSAFE.sub("_", text).strip("._") or "image"


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """One distinct overlay file name per image: its stem, or its folder and stem where
    stems repeat (Kaggle names repeat across class folders), then a number if still taken."""
    stems = [safe_name(p.stem) for p in paths]
    repeated = {s.lower() for s in stems if sum(t.lower() == s.lower() for t in stems) > 1}
    used: set[str] = set()
    names = []
    for path, stem in zip(paths, stems, strict=True):
        base = f"{safe_name(path.parent.name)}_{stem}" if stem.lower() in repeated else stem
        name, n = f"{base}.gradcam.png", 2
        while name.lower() in used:
            name, n = f"{base}-{n}.gradcam.png", n + 1
        used.add(name.lower())
        names.append(name)
    return names


def explain_paths(
    model_path: str | os.PathLike[str],
    paths: Sequence[str],
    out_dir: str | os.PathLike[str],
    on_result: Callable[[Explanation], None] | None = None,
) -> list[Explanation]:
    """Write one Grad-CAM overlay per image into `out_dir` (created) and say what each shows.

    Args:
        model_path: A ``.keras`` model saved by train-best.
        paths: Image files and folders (searched recursively).
        out_dir: The folder for the overlays.
        on_result: Called with each explanation as soon as its overlay is written.

    Raises:
        InputError, ModelError: a missing model or file, a non-image named directly, an
            unwritable `out_dir`, a backend without Grad-CAM: before anything is written.
    """
    from models.gradcam import check_backend, gradcam, gradcam_chain

    files = collect_images(list(paths))
    direct = {Path(p).expanduser() for p in paths}
    for path in direct:
        if path.is_file() and not is_readable_image(path):
            raise InputError(f"not an image: {path}")
    out = check_writable_dir(out_dir)
    check_backend()
    model = load_model(model_path)
    chain = gradcam_chain(model)
    names = class_names(model)
    pixels, kept = decode_images(files, direct, int(model.input_shape[1]), "explain")
    make_out_dir(out)
    names_out = overlay_names(kept)
    results: list[Explanation] = []
    with Progress(len(kept), "explaining", min_total=BATCH_SIZE * 2) as bar:
        for start in range(0, len(kept), BATCH_SIZE):
            batch = gradcam(model, pixels[start : start + BATCH_SIZE], chain=chain)
            for i, path in enumerate(kept[start : start + BATCH_SIZE]):
                k = int(batch.classes[i])
                probability = float(batch.probabilities[i, k])
                target = out / names_out[start + i]
                png = overlay_png(pixels[start + i], batch.maps[i], _title(names[k], probability))
                write_result(target, png, durable=False)
                result = Explanation(str(path), names[k], round(probability, 6), str(target))
                results.append(result)
                if on_result is not None:
                    on_result(result)
                bar.update()
    return results


def _pick(probs: np.ndarray, y: np.ndarray, c: int, correct: bool) -> int | None:
    """The test image of class `c` predicted most confidently, rightly or wrongly."""
    predicted = probs.argmax(axis=1)
    hit = (y == c) & ((predicted == c) if correct else (predicted != c))
    if not hit.any():
        return None
    candidates = np.flatnonzero(hit)
    return int(candidates[np.argmax(probs[candidates].max(axis=1))])


def _examples(probs: np.ndarray, y: np.ndarray, n_classes: int) -> list[tuple[int, str, int]]:
    """(class, kind, image index) of each example, per class a correct then a wrong one."""
    chosen = []
    for c in range(n_classes):
        for kind in ("correct", "wrong"):
            index = _pick(probs, y, c, kind == "correct")
            if index is not None:
                chosen.append((c, kind, index))
    return chosen


def write_examples(
    model: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    paths: Sequence[str | os.PathLike[str] | None] | None,
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> list[dict[str, Any]]:
    """Grad-CAM overlays of one correctly and one wrongly classified test image per class
    (where one exists), written under ``out_dir/explain/``, for the report.

    Args:
        model: The trained model (raw 0-255 RGB pixels in).
        x_test: ``(n, size, size, 3)`` test images at the model's input size.
        y_test: ``(n,)`` their labels, indices into `classes`.
        paths: The images' source files (recorded for the reader), or None.
        classes: Class names in label order.
        out_dir: The train-best output folder; the PNG paths returned are relative to it.

    Returns:
        One record per overlay: ``class``, ``kind`` (``correct`` or ``wrong``),
        ``predicted``, ``probability`` (of the predicted class), ``png``, ``image``; none
        on a backend without Grad-CAM (a log line says so: the trained model matters more).
    """
    from models.errors import ModelError
    from models.gradcam import check_backend, gradcam

    try:
        check_backend()
    except ModelError as exc:
        log(f"no Grad-CAM examples: {exc}")
        return []
    x = np.asarray(x_test)
    y = np.asarray(y_test).astype(np.int64)
    probs = np.asarray(predict(model, x, 32), np.float32)
    chosen = _examples(probs, y, len(classes))
    if not chosen:
        return []
    indices = [index for _, _, index in chosen]
    cams = gradcam(model, x[indices])
    records = []
    for i, (c, kind, index) in enumerate(chosen):
        k, cam_map = int(cams.classes[i]), cams.maps[i]
        probability = float(cams.probabilities[i, k])
        relative = f"{EXAMPLES_DIR}/{safe_name(classes[c])}_{kind}.png"
        title = _title(classes[k], probability, classes[c])
        write_result(Path(out_dir) / relative, overlay_png(x[index], cam_map, title))
        source = paths[index] if paths is not None else None
        records.append(
            {
                "class": classes[c],
                "kind": kind,
                "predicted": classes[k],
                "probability": round(probability, 6),
                "png": relative,
                "image": str(source) if source is not None else None,
            }
        )
    return records
