"""DICOM files and NIfTI volumes as 8-bit grayscale slices.

A dataset's class folders may hold, at any depth, DICOM files (``.dcm``) and NIfTI volumes
(``.nii``, ``.nii.gz``) beside ordinary images. Each becomes one or more slices, addressed
as ``RELATIVE/PATH#KEY`` (`slice_path`): a single-frame DICOM file is its own path, frame
``k`` of a multi-frame file is ``#frame=k`` and slice ``i`` of a volume along its axis is
``#axial=i`` (or ``coronal``, ``sagittal``), all counted from 1.

DICOM: stored values -> modality LUT (rescale slope and intercept, per frame in an enhanced
multi-frame file) -> the file's VOI window (window centre and width, per frame where given;
a robust 0.5-99.5 percentile window where absent, or always with ``dicom_window:
percentile``) -> 8 bits (MONOCHROME1 inverted, colour to luminance). The PatientID (else
the StudyInstanceUID, else the file) is the slice's patient group. Files without pixel data (structured
reports, RT structures, presentation states) are skipped with the reason.

NIfTI: the volume reoriented to the closest canonical (RAS+) orientation
(`nibabel.as_closest_canonical`), scaled to 8 bits by its own 0.5-99.5 percentiles, sliced
along `MedicalSettings.volume_axis` within `volume_range` (fractions of the axis), each
slice turned so that anterior (axial, sagittal) or superior (coronal) is up; slices whose
mean is under `volume_min_intensity` (of 255) are skipped as background. A 4-D volume
gives its first 3-D volume (say, the first time point of an fMRI or DWI series). The volume
is the slices' patient group.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # in RAS+ after as_closest_canonical
DICOM_WINDOWS = ("file", "percentile")
PERCENTILES = (0.5, 99.5)


class NotAnImage(Exception):
    """A file of a known kind that holds no image (a DICOM structured report, say)."""


@dataclass(frozen=True)
class MedicalSettings:
    """How DICOM and NIfTI files become slices (the study config's ``data`` section).

    Attributes:
        dicom_window: ``file`` (the file's VOI window, a percentile window without one) or
            ``percentile`` (always the 0.5-99.5 percentile window).
        volume_axis: ``axial``, ``coronal`` or ``sagittal``.
        volume_range: The part of the axis sliced, as fractions (0, 1 is all of it).
        volume_min_intensity: Slices whose mean 8-bit value is below this fraction of 255
            are skipped (the empty slices above and below the head).
    """

    dicom_window: str = "file"
    volume_axis: str = "axial"
    volume_range: tuple[float, float] = (0.0, 1.0)
    volume_min_intensity: float = 0.05

    def __post_init__(self) -> None:
        low, high = self.volume_range
        if self.dicom_window not in DICOM_WINDOWS:
            raise DataError(f"dicom_window must be one of {', '.join(DICOM_WINDOWS)}")
        if self.volume_axis not in AXES:
            raise DataError(f"volume_axis must be one of {', '.join(AXES)}")
        if not 0.0 <= low < high <= 1.0:
            raise DataError(
                f"volume_range must be two fractions 0 <= low < high <= 1, got {low}, {high}"
            )
        if not 0.0 <= self.volume_min_intensity < 1.0:
            raise DataError("volume_min_intensity must be in [0, 1)")


@dataclass(frozen=True)
class Slice:
    """One slice of a file: its key (`slice_path`), 8-bit pixels and patient group
    (``patient:<PatientID>``, ``study:<StudyInstanceUID>``, or ``""``: the file's own)."""

    key: str
    pixels: np.ndarray  # (rows, columns) uint8
    group: str


def is_medical(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(DICOM_SUFFIXES) or lowered.endswith(NIFTI_SUFFIXES)


def slice_path(rel: str, key: str) -> str:
    """The address of a slice: the file's relative path, with ``#key`` unless it is the
    file's only image."""
    return f"{rel}#{key}" if key else rel


def split_slice_path(path: str) -> tuple[str, str]:
    """(file, key) of a slice address; key ``""`` for a file that is its own image."""
    file, sep, key = path.rpartition("#")
    if sep and is_medical(file) and "=" in key:
        return file, key
    return path, ""


def read_slices(path: str | os.PathLike[str], settings: MedicalSettings) -> list[Slice]:
    """Every slice of a DICOM file or NIfTI volume.

    Raises:
        NotAnImage: a DICOM file without pixel data.
        DataError: the file cannot be read or decoded.
    """
    path = Path(path)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return _volume_slices(str(path), settings)
    return _dicom_slices(str(path), settings)


def read_slice(path: str | os.PathLike[str], key: str, settings: MedicalSettings) -> np.ndarray:
    """The 8-bit pixels of one slice (`split_slice_path`'s key).

    Raises:
        DataError: the file cannot be read, or has no such slice.
    """
    path = Path(path)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        slices = _volume_slices(str(path), settings)
    else:
        try:
            slices = _dicom_slices(str(path), settings)
        except NotAnImage as exc:
            raise DataError(f"{path}: {exc}") from None
    for found in slices:
        if found.key == key:
            return found.pixels
    raise DataError(f"{path} has no slice {key or '(single image)'}")


# --- DICOM -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)  # a multi-frame file is decoded once for all its frames
def _dicom_slices(path: str, settings: MedicalSettings) -> list[Slice]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read DICOM file {path}: {exc}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = getattr(ds.get("SOPClassUID"), "name", None) or ds.get("Modality", "unknown")
        raise NotAnImage(f"no pixel data ({kind})")
    try:
        array = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - every decoder failure is an unreadable file
        raise DataError(f"cannot decode the pixels of {path}: {exc}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    if frames == 1:
        array = array[np.newaxis]
    patient = str(ds.get("PatientID", "") or "").strip()
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    group = f"patient:{patient}" if patient else f"study:{study}" if study else ""
    out = []
    for index in range(frames):
        frame = array[index]
        if colour:  # pydicom gives RGB (YBR converted); luminance as Pillow's "L"
            frame = frame[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            pixels = np.clip(np.round(frame), 0, 255).astype(np.uint8)
        else:
            pixels = _window(_rescaled(ds, frame, index), *_voi(ds, index, settings), ds)
        out.append(Slice(f"frame={index + 1}" if frames > 1 else "", pixels, group))
    return out


def _item(ds: Any, index: int, sequence: str, attribute: str) -> Any:
    """`attribute` of the frame's functional group `sequence` (per-frame, else shared)."""
    for name, pick in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(name)
        if groups and len(groups) > pick:
            inner = groups[pick].get(sequence)
            if inner and attribute in inner[0]:
                return inner[0].get(attribute)
    return None


def _first(value: Any) -> float | None:
    """A number from a DICOM value (the first of a multi-valued one), or None."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _rescaled(ds: Any, frame: np.ndarray, index: int) -> np.ndarray:
    """The modality LUT: stored values to modality units (Hounsfield units on CT)."""
    slope = _first(_item(ds, index, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _first(_item(ds, index, "PixelValueTransformationSequence", "RescaleIntercept"))
    slope = slope if slope is not None else _first(ds.get("RescaleSlope"))
    intercept = intercept if intercept is not None else _first(ds.get("RescaleIntercept"))
    values = frame.astype(np.float64)
    return values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)


def _voi(ds: Any, index: int, settings: MedicalSettings) -> tuple[float | None, float | None]:
    """The frame's window (centre, width), or (None, None) for a percentile window."""
    if settings.dicom_window == "percentile":
        return None, None
    centre = _first(_item(ds, index, "FrameVOILUTSequence", "WindowCenter"))
    width = _first(_item(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    if centre is None or width is None:
        centre, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if centre is None or width is None or width < 1:
        return None, None
    return centre, width


def _window(values: np.ndarray, centre: float | None, width: float | None, ds: Any) -> np.ndarray:
    """8-bit pixels through the linear VOI window (DICOM PS3.3 C.11.2.1.2), or the robust
    percentile window; MONOCHROME1 (bright is low) inverted."""
    if centre is None or width is None:
        low, high = np.percentile(values, PERCENTILES)
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    else:
        scaled = (values - (centre - 0.5)) / (width - 1.0) + 0.5
    pixels = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels


# --- NIfTI -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)  # decoding threads share the volume they all slice
def _volume_slices(path: str, settings: MedicalSettings) -> list[Slice]:
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for a bad file
        raise DataError(f"cannot read NIfTI volume {path}: {exc}") from None
    if data.ndim == 4:
        data = data[..., 0]  # the first 3-D volume of a series
    if data.ndim != 3 or min(data.shape) < 1:
        raise DataError(f"NIfTI volume {path} has shape {data.shape}; need 3-D (or 4-D)")
    finite = data[np.isfinite(data)]
    low, high = np.percentile(finite, PERCENTILES) if finite.size else (0.0, 0.0)
    scaled = (
        (np.nan_to_num(data, nan=low) - low) / (high - low) if high > low else np.zeros_like(data)
    )
    volume = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    axis = AXES[settings.volume_axis]
    count = volume.shape[axis]
    first = int(np.floor(settings.volume_range[0] * count))
    last = max(first + 1, int(np.ceil(settings.volume_range[1] * count)))
    out = []
    for index in range(first, min(last, count)):
        pixels = np.ascontiguousarray(np.rot90(np.take(volume, index, axis=axis)))
        if pixels.mean() < settings.volume_min_intensity * 255.0:
            continue
        out.append(Slice(f"{settings.volume_axis}={index + 1}", pixels, ""))
    return out
