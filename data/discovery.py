"""Dataset discovery: find the layout, the class folders and every readable image.

Three layouts are recognised:

* ``kaggle_classification``: Kaggle "Brain Tumor Classification (MRI)": ``Training/`` and
  ``Testing/`` holding ``glioma_tumor``, ``meningioma_tumor``, ``no_tumor``, ``pituitary_tumor``.
* ``brain_tumor_mri``: the larger "Brain Tumor MRI Dataset": ``Training/`` and ``Testing/``
  holding ``glioma``, ``meningioma``, ``notumor``, ``pituitary``.
* ``flat``: ``DIR/<class>/`` with no official test split.

``Training/``+``Testing/`` folders with other class names are read too (layout ``train_test``).
Class folders may hold DICOM files and NIfTI volumes beside images: each of their slices is
an image (`data.medical`), with its patient (DICOM PatientID, the NIfTI volume) as group.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tumor_predict.decode import IMAGE_EXTENSIONS, is_hidden_or_junk

from common.progress import Progress
from data.errors import DataError
from data.medical import (
    NIFTI_SUFFIXES,
    MedicalSettings,
    NotAnImage,
    is_medical,
    read_slices,
    slice_path,
)
from data.near_dup import perceptual_hash
from data.phash_cache import HashCache

CANONICAL_CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")

# Folder names of the known datasets mapped to the canonical labels.
CLASS_ALIASES = {
    "glioma": "glioma",
    "glioma_tumor": "glioma",
    "meningioma": "meningioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "no_tumor",
    "notumor": "no_tumor",
    "no tumor": "no_tumor",
    "no-tumor": "no_tumor",
    "pituitary": "pituitary",
    "pituitary_tumor": "pituitary",
}

TRAIN_DIR_NAMES = ("training", "train")
TEST_DIR_NAMES = ("testing", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One readable image of a dataset.

    Attributes:
        path: Path relative to the dataset root, with ``/`` separators.
        label: Canonical class label.
        source: ``"Training"``/``"Testing"`` folder it came from, or ``None`` (flat layout).
        sha256: Hash of the file's bytes.
        phash: Perceptual hash (`data.near_dup.perceptual_hash`, hex) of its pixels, computed
            in the same pass; ``""`` when unknown (never a near duplicate of anything).
        group: The patient group a DICOM or NIfTI slice carries (``""`` for other images).
    """

    path: str
    label: str
    source: str | None
    sha256: str
    phash: str = ""
    group: str = ""


@dataclass(frozen=True)
class Dataset:
    """What `scan` found under a dataset root."""

    root: Path
    layout: str
    classes: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    unreadable: tuple[str, ...]
    ignored: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason): files that hold no image
    medical: MedicalSettings | None = None  # how slices were read, when there are any

    @property
    def has_slices(self) -> bool:
        """Whether any image is a DICOM or NIfTI slice."""
        return any(is_medical(r.path.partition("#")[0]) for r in self.images)

    @property
    def has_official_test(self) -> bool:
        return any(r.source == "Testing" for r in self.images)

    def duplicates(self) -> list[list[str]]:
        """Groups of relative paths whose files have identical content."""
        groups: dict[str, list[str]] = defaultdict(list)
        for record in self.images:
            groups[record.sha256].append(record.path)
        return sorted(sorted(g) for g in groups.values() if len(g) > 1)

    def per_class(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for record in self.images:
            counts[record.label] += 1
        return counts


def canonical_label(folder_name: str) -> str:
    """Map a class folder's name to its canonical label; unknown names are kept as they are."""
    return CLASS_ALIASES.get(folder_name.strip().lower(), folder_name)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not is_hidden_or_junk(p.name))


def _find_named(path: Path, names: tuple[str, ...]) -> Path | None:
    for sub in _subdirs(path):
        if sub.name.lower() in names:
            return sub
    return None


def _resolve_root(root: Path) -> Path:
    """Descend into a single wrapping folder (e.g. an unpacked ``archive/``) when needed."""
    current = root
    for _ in range(2):
        subs = _subdirs(current)
        if _find_named(current, TRAIN_DIR_NAMES) or len(subs) != 1:
            return current
        if any(f.is_file() for f in current.iterdir() if not is_hidden_or_junk(f.name)):
            return current
        inner = subs[0]
        if not (_find_named(inner, TRAIN_DIR_NAMES) or len(_subdirs(inner)) >= 2):
            return current
        current = inner
    return current


def is_readable_image(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an image file that decodes completely."""
    return _check_image(Path(path)) is not None


def _check_image(path: Path, hashes: HashCache | None = None) -> tuple[str, str] | None:
    """Make sure an image file decodes; return its sha256 and perceptual hash (from
    `hashes` when it knows the sha256), or None if it is unreadable."""
    try:
        payload = path.read_bytes()
    except OSError:
        return None
    if not payload:
        return None
    digest = hashlib.sha256(payload).hexdigest()
    known = hashes.get(digest) if hashes is not None else None
    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.draft("RGB", (64, 64))  # full scan of the stream at a fraction of the cost
            img.load()
            phash = known if known is not None else perceptual_hash(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if known is None and hashes is not None:
        hashes.put(digest, phash)
    return digest, phash


def _layout_name(folder_names: set[str], split_layout: bool) -> str:
    lowered = {n.lower() for n in folder_names}
    if not split_layout:
        return "flat"
    if {"glioma_tumor", "meningioma_tumor", "pituitary_tumor"} & lowered:
        return "kaggle_classification"
    if {"notumor", "glioma", "meningioma", "pituitary"} & lowered:
        return "brain_tumor_mri"
    return "train_test"


def _sources(base: Path) -> list[tuple[Path, str | None]]:
    """The folders that hold class folders: Training/ (and Testing/), else `base` itself."""
    train_dir = _find_named(base, TRAIN_DIR_NAMES)
    test_dir = _find_named(base, TEST_DIR_NAMES)
    if train_dir is None:
        return [(base, None)]
    sources: list[tuple[Path, str | None]] = [(train_dir, "Training")]
    if test_dir is not None:
        sources.append((test_dir, "Testing"))
    return sources


def _candidates(
    sources: list[tuple[Path, str | None]], base: Path
) -> tuple[list[tuple[Path, str, str | None]], list[str], set[str]]:
    """Image files (path, label, source) to check, non-image files, and class folder names."""
    candidates: list[tuple[Path, str, str | None]] = []
    ignored: list[str] = []
    folder_names: set[str] = set()
    for source_dir, source in sources:
        for class_dir in _subdirs(source_dir):
            folder_names.add(class_dir.name)
            label = canonical_label(class_dir.name)
            for dirpath, dirnames, filenames in os.walk(class_dir):
                dirnames[:] = sorted(d for d in dirnames if not is_hidden_or_junk(d))
                for name in sorted(filenames):
                    path = Path(dirpath) / name
                    rel = path.relative_to(base).as_posix()
                    kind_known = path.suffix.lower() in IMAGE_EXTENSIONS or is_medical(name)
                    if is_hidden_or_junk(name) or not kind_known:
                        ignored.append(rel)
                        continue
                    candidates.append((path, label, source))
    return candidates, ignored, folder_names


def _check_medical(path: Path, settings: MedicalSettings) -> list[tuple[str, str, str, str]]:
    """(key, sha256, phash, group) of each slice of a DICOM file or NIfTI volume: the
    sha256 of its 8-bit pixels (and shape), the perceptual hash of those pixels.

    Raises:
        NotAnImage: a file without pixel data.
        DataError: the file cannot be read.
    """
    out = []
    for found in read_slices(path, settings):
        digest = hashlib.sha256(repr(found.pixels.shape).encode() + found.pixels.tobytes())
        phash = perceptual_hash(Image.fromarray(found.pixels, "L"))
        out.append((found.key, digest.hexdigest(), phash, found.group))
    return out


def _check_one(
    candidate: tuple[Path, str, str | None], cached: HashCache, settings: MedicalSettings
) -> object:
    """A candidate's (sha256, phash) or None (unreadable), or a DICOM/NIfTI file's slices
    (a list), or the reason it holds no image (a str)."""
    path = candidate[0]
    if not is_medical(path.name):
        return _check_image(path, cached)
    try:
        return _check_medical(path, settings)
    except NotAnImage as exc:
        return str(exc)
    except DataError:
        return None


def _check_all(
    candidates: list[tuple[Path, str, str | None]],
    base: Path,
    workers: int | None,
    settings: MedicalSettings,
) -> tuple[list[ImageRecord], list[str], list[tuple[str, str]]]:
    """Hash and verify every candidate in threads: the readable images (a slice each for
    DICOM and NIfTI files), the unreadable files and the files without an image."""
    results: list[object] = []
    cached = HashCache()
    with (
        Progress(len(candidates), "checking images", min_total=500) as bar,
        ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool,
    ):
        for result in pool.map(lambda c: _check_one(c, cached, settings), candidates):
            results.append(result)
            bar.update()
    cached.save()
    images: list[ImageRecord] = []
    unreadable: list[str] = []
    skipped: list[tuple[str, str]] = []
    for (path, label, source), result in zip(candidates, results, strict=True):
        rel = path.relative_to(base).as_posix()
        if result is None:
            unreadable.append(rel)
        elif isinstance(result, str):
            skipped.append((rel, result))
        elif isinstance(result, list):
            kind = "volume" if rel.lower().endswith(NIFTI_SUFFIXES) else "file"
            images += [
                ImageRecord(
                    slice_path(rel, key), label, source, digest, phash, group or f"{kind}:{rel}"
                )
                for key, digest, phash, group in result
            ]
        else:
            images.append(ImageRecord(rel, label, source, *result))
    return images, unreadable, skipped


def _check_classes(
    labels: list[str], images: list[ImageRecord], unreadable: list[str], given: Path
) -> None:
    """Every class has a readable image, and there are at least two classes."""
    counts = {label: 0 for label in labels}
    for record in images:
        counts[record.label] += 1
    empty = [label for label, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"class {empty[0]!r} has no readable image in {given}"
            + (f" ({len(unreadable)} unreadable files)" if unreadable else "")
        )
    if len(labels) < 2:
        raise DataError(f"need at least 2 classes, found {len(labels)} ({labels[0]}) in {given}")


def scan(
    root: str | os.PathLike[str],
    workers: int | None = None,
    medical: MedicalSettings | None = None,
) -> Dataset:
    """Find the layout, classes and readable images under `root`.

    Args:
        root: The dataset folder.
        workers: Threads used to hash and verify images (default: one per CPU). Each image
            is decoded once, for its check and its perceptual hash; perceptual hashes of
            images seen before come from the cache (`data.phash_cache`).
        medical: How DICOM files and NIfTI volumes become slices (default settings).

    Raises:
        DataError: the folder is missing, holds no class folders, has fewer than two classes,
            or has a class with no readable image.
    """
    given = Path(root).expanduser()
    if not given.exists():
        raise DataError(f"data folder not found: {given}")
    if not given.is_dir():
        raise DataError(f"data path is not a folder: {given}")
    base = _resolve_root(given)
    sources = _sources(base)
    candidates, ignored, folder_names = _candidates(sources, base)
    if not folder_names:
        raise DataError(
            f"no class folders in {given}: expected Training/ and Testing/ or one folder per class"
        )
    settings = medical or MedicalSettings()
    images, unreadable, skipped = _check_all(candidates, base, workers, settings)
    labels = sorted({canonical_label(n) for n in folder_names})
    _check_classes(labels, images, unreadable, given)
    images.sort(key=lambda r: r.path)
    return Dataset(
        root=base,
        layout=_layout_name(folder_names, sources[0][1] == "Training"),
        classes=tuple(labels),
        images=tuple(images),
        unreadable=tuple(sorted(unreadable)),
        ignored=tuple(sorted(ignored)),
        skipped=tuple(sorted(skipped)),
        medical=settings if any(is_medical(p.name) for p, _, _ in candidates) else None,
    )
