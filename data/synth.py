"""Phantom axial MRI slices in the Kaggle layout, so the whole service runs offline.

Each slice has a bright scalp ring over a dark skull, a CSF rim, a textured brain with a
smooth bias field and two ventricles. The class is the tumour:

* ``glioma_tumor``: an irregular, heterogeneous mass inside one hemisphere with a darker
  oedema halo;
* ``meningioma_tumor``: a round, homogeneous, well-defined mass against the inner skull;
* ``pituitary_tumor``: a small midline mass at the skull base;
* ``no_tumor``: none.

Every image has its own rotation, scale, shift, contrast, bias field and Rician noise, and
tumour contrast varies from clear to faint, so a small network needs several epochs to
separate the classes. Output is reproducible for a seed: the same files, byte for byte.
"""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.progress import Progress
from data.cache import atomic_write_bytes
from data.errors import DataError

KAGGLE_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    per_class: int
    train: int
    test: int
    size: int


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-scale noise that varies over about `cells` cells per side."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _soft(inside: np.ndarray, sharpness: float) -> np.ndarray:
    """Soft indicator of ``inside > 0`` with an edge width of about 1/sharpness."""
    return 1.0 / (1.0 + np.exp(-np.clip(inside * sharpness, -30.0, 30.0)))


@dataclass(frozen=True)
class _Frame:
    """The pixel grid of one slice and the head's pose in it (normalised units)."""

    size: int
    px: float  # one pixel
    x: np.ndarray
    y: np.ndarray  # grows downwards (towards the skull base)
    u: np.ndarray  # head coordinates: the grid rotated, scaled and shifted
    v: np.ndarray


def _frame(size: int, rng: np.random.Generator) -> _Frame:
    """The grid, and the head's rotation, scale and shift in the frame."""
    px = 2.0 / size
    coords = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    x, y = np.meshgrid(coords, coords)
    theta = np.deg2rad(rng.uniform(-15.0, 15.0))
    scale = rng.uniform(0.82, 1.0)
    dx, dy = rng.uniform(-0.06, 0.06, size=2)
    c, s = np.cos(theta), np.sin(theta)
    u = (c * (x - dx) + s * (y - dy)) / scale
    v = (-s * (x - dx) + c * (y - dy)) / scale
    return _Frame(size, px, x, y, u, v)


def _brain(f: _Frame, r: np.ndarray, sharp: float, rng: np.random.Generator) -> np.ndarray:
    """Grey rim, brighter white matter, folded texture and two dark ventricles by the midline."""
    size, u, v = f.size, f.u, f.v
    texture = _smooth_noise(rng, size, 12) * 0.05 + _smooth_noise(rng, size, 40) * 0.03
    folds = 0.04 * np.sin(r * rng.uniform(28.0, 40.0) + _smooth_noise(rng, size, 8) * 3.0)
    white = _soft(0.62 + 0.05 * _smooth_noise(rng, size, 6) - r, sharp * 0.3)
    brain = 0.48 + 0.14 * white + texture + folds * (1.0 - white)
    vent = np.zeros_like(r)
    vx, vy = rng.uniform(0.08, 0.13), rng.uniform(-0.12, 0.0)
    vw, vh = rng.uniform(0.05, 0.08), rng.uniform(0.16, 0.24)
    for side in (-1.0, 1.0):
        tilt = side * np.deg2rad(rng.uniform(10.0, 25.0))
        cu, su = np.cos(tilt), np.sin(tilt)
        du, dv = u - side * vx, v - vy
        eu = (cu * du + su * dv) / vw
        ev = (-su * du + cu * dv) / vh
        vent = np.maximum(vent, _soft(1.0 - np.sqrt(eu**2 + ev**2), 6.0))
    return brain * (1.0 - vent) + 0.16 * vent


def _glioma(f: _Frame, brain: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular bright core with a dark oedema halo, in one hemisphere."""
    u, v = f.u, f.v
    side = rng.choice((-1.0, 1.0))
    cu0 = side * rng.uniform(0.22, 0.42)
    cv0 = rng.uniform(-0.45, 0.4)
    radius = rng.uniform(0.13, 0.2)
    phi = np.arctan2(v - cv0, u - cu0)
    wobble = np.ones_like(phi)
    for k in range(2, 6):
        wobble += rng.uniform(0.04, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    dist = np.sqrt((u - cu0) ** 2 + (v - cv0) ** 2) / (radius * wobble)
    core = _soft(1.0 - dist, 10.0)
    halo = _soft(1.7 - dist, 6.0) - core
    hetero = 0.08 * _smooth_noise(rng, f.size, 24)
    brain = brain * (1.0 - core) + (0.55 + 0.35 * strength + hetero) * core
    return brain - 0.25 * strength * halo


def _meningioma(
    f: _Frame,
    brain: np.ndarray,
    strength: float,
    ab: tuple[float, float],
    mask: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A round bright mass against the inner skull."""
    a, b = ab
    alpha = rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(0.11, 0.17)
    # Centre the mass just inside the inner skull, along a random direction.
    ru = (0.86 - radius / min(a, b) * 0.8) * a
    rv = (0.86 - radius / min(a, b) * 0.8) * b
    cu0, cv0 = ru * np.cos(alpha), rv * np.sin(alpha)
    dist = np.sqrt((f.u - cu0) ** 2 + (f.v - cv0) ** 2) / radius
    mass = _soft(1.0 - dist, 18.0) * mask
    return brain * (1.0 - mass) + (0.55 + 0.4 * strength) * mass


def _pituitary(
    f: _Frame, brain: np.ndarray, strength: float, b: float, rng: np.random.Generator
) -> np.ndarray:
    """A small bright mass at the midline, low towards the skull base."""
    radius = rng.uniform(0.08, 0.11)
    cu0 = rng.uniform(-0.03, 0.03)
    cv0 = b * rng.uniform(0.5, 0.62)
    dist = np.sqrt(((f.u - cu0) / 1.2) ** 2 + (f.v - cv0) ** 2) / radius
    mass = _soft(1.0 - dist, 14.0)
    return brain * (1.0 - mass) + (0.55 + 0.4 * strength) * mass


def _scanner(f: _Frame, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth bias field, contrast and gamma, Rician noise; 8-bit pixels."""
    bias = (
        1.0
        + 0.12 * _smooth_noise(rng, f.size, 3)
        + 0.1 * (rng.uniform(-1, 1) * f.x + rng.uniform(-1, 1) * f.y)
    )
    img = np.clip(img * bias, 0.0, None)
    img = img ** rng.uniform(0.8, 1.25) * rng.uniform(0.85, 1.1)
    sigma = rng.uniform(0.015, 0.05)
    img = np.sqrt(
        (img + sigma * rng.standard_normal(img.shape)) ** 2
        + (sigma * rng.standard_normal(img.shape)) ** 2
    )
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def phantom(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One phantom slice as a ``(size, size)`` uint8 array.

    Args:
        label: One of `KAGGLE_FOLDERS`.
        size: Side in pixels.
        rng: Source of every random choice for this image (drawn in a fixed order).
    """
    if label not in KAGGLE_FOLDERS:
        raise ValueError(f"unknown phantom class {label!r}")
    f = _frame(size, rng)
    # Head: an ellipse, taller than wide; r = 1 on the outer scalp.
    a = 0.74 * rng.uniform(0.95, 1.05)
    b = 0.9 * rng.uniform(0.95, 1.03)
    r = np.sqrt((f.u / a) ** 2 + (f.v / b) ** 2)
    sharp = 1.0 / (f.px * 1.5 / min(a, b))
    head = _soft(1.0 - r, sharp)
    brain_mask = _soft(0.86 - r, sharp)
    csf_rim = _soft(0.9 - r, sharp) - brain_mask
    skull = _soft(0.94 - r, sharp) - _soft(0.9 - r, sharp)
    scalp = head - _soft(0.94 - r, sharp)
    brain = _brain(f, r, sharp, rng)
    # Tumour: added to the brain before the bias field and noise.
    strength = rng.uniform(0.7, 1.0)
    if label == "glioma_tumor":
        brain = _glioma(f, brain, strength, rng)
    elif label == "meningioma_tumor":
        brain = _meningioma(f, brain, strength, (a, b), brain_mask, rng)
    elif label == "pituitary_tumor":
        brain = _pituitary(f, brain, strength, b, rng)
    img = brain * brain_mask + 0.22 * csf_rim + 0.08 * skull + 0.82 * scalp
    return _scanner(f, img, rng)


def phantom_with_lesion(
    label: str, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`phantom`'s slice (same pixels for the same `rng` state) and its lesion mask: the
    share of each pixel the tumour replaces, (size, size) float32 in [0, 1], zeros for
    ``no_tumor`` (the tumour drawn again over a black and a white brain, same draws)."""
    replay = copy.deepcopy(rng)
    pixels = phantom(label, size, rng)
    f = _frame(size, replay)
    a = 0.74 * replay.uniform(0.95, 1.05)
    b = 0.9 * replay.uniform(0.95, 1.03)
    r = np.sqrt((f.u / a) ** 2 + (f.v / b) ** 2)
    sharp = 1.0 / (f.px * 1.5 / min(a, b))
    brain_mask = _soft(0.86 - r, sharp)
    _brain(f, r, sharp, replay)
    strength = replay.uniform(0.7, 1.0)
    drawn = []
    for level in (0.0, 1.0):
        again, brain = copy.deepcopy(replay), np.full_like(r, level)
        if label == "glioma_tumor":
            drawn.append(_glioma(f, brain, strength, again))
        elif label == "meningioma_tumor":
            drawn.append(_meningioma(f, brain, strength, (a, b), brain_mask, again))
        elif label == "pituitary_tumor":
            drawn.append(_pituitary(f, brain, strength, b, again))
        else:
            drawn.append(brain)
    mask = 1.0 - (drawn[1] - drawn[0])
    return pixels, np.clip(mask * brain_mask, 0.0, 1.0).astype(np.float32)


def _encode_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def synthesize(
    out: str | os.PathLike[str],
    per_class: int = 200,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.12,
) -> SynthSummary:
    """Write phantom slices in the Kaggle "Brain Tumor Classification (MRI)" layout.

    Args:
        out: Folder to write ``Training/`` and ``Testing/`` into.
        per_class: Images per class in total (train and test).
        size: Side of the square images, in pixels.
        seed: Seed; the same seed writes byte-identical files.
        test_fraction: Share of each class written under ``Testing/``.

    Raises:
        DataError: bad arguments, or `out` exists and is not an empty folder or an earlier
            phantom set.
    """
    if per_class < 2:
        raise DataError(f"--per-class must be at least 2, got {per_class}")
    if not 16 <= size <= 1024:
        raise DataError(f"--size must be between 16 and 1024 pixels, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    out_path = Path(out).expanduser()
    if out_path.exists():
        if not out_path.is_dir():
            raise DataError(f"--out exists and is not a folder: {out_path}")
        extra = [p.name for p in out_path.iterdir() if p.name not in ("Training", "Testing")]
        if extra:
            raise DataError(
                f"--out {out_path} is not empty (holds {extra[0]!r}); choose a new folder"
            )
    try:
        for split in ("Training", "Testing"):
            for folder in KAGGLE_FOLDERS:
                (out_path / split / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write to --out {out_path}: {exc.strerror}") from exc

    n_test = int(round(per_class * test_fraction))
    total = per_class * len(KAGGLE_FOLDERS)
    with Progress(total, "synthesising phantoms", min_total=200) as bar:
        for class_index, folder in enumerate(KAGGLE_FOLDERS):
            for i in range(per_class):
                rng = np.random.default_rng([seed, class_index, i])
                split = "Testing" if i < n_test else "Training"
                number = i + 1 if i < n_test else i - n_test + 1
                # Kaggle's names repeat across folders ("image(1).jpg"): keep that trap.
                target = out_path / split / folder / f"image({number}).jpg"
                atomic_write_bytes(target, _encode_jpeg(phantom(folder, size, rng)), durable=False)
                bar.update()
    return SynthSummary(out_path, per_class, total - n_test * 4, n_test * 4, size)
