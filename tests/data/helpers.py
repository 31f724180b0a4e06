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


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    patient: str,
    study: str = "1.2.826.0.1.3680043.8.498.1",
    **attrs: object,
) -> Path:
    """Write `pixels` (uint16, (rows, cols) or (frames, rows, cols)) as an MR image with
    pydicom: explicit VR little endian, 12 bits stored, MONOCHROME2; `attrs` set or
    override attributes (WindowCenter, RescaleIntercept, PhotometricInterpretation ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    frames = pixels if pixels.ndim == 3 else pixels[np.newaxis]
    if pixels.ndim == 3:
        ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = frames.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_dataset(
    root: Path, patients_per_class: int, slices: int, size: int = 40, seed: int = 0
) -> dict[str, str]:
    """A flat dataset of DICOM series: `root/<class>/<patient>/IM<k>.dcm`, phantom slices
    as 12-bit values with a window in each file; returns each file's patient."""
    from data.synth import KAGGLE_FOLDERS, phantom

    rng = np.random.default_rng(seed)
    owner = {}
    for c, folder in enumerate(KAGGLE_FOLDERS):
        for p in range(patients_per_class):
            patient = f"PAT{c}{p:02d}"
            for k in range(slices):
                values = phantom(folder, size, rng).astype(np.uint16) * 16
                path = root / folder / patient / f"IM{k}.dcm"
                write_dicom(path, values, patient, WindowCenter=2048, WindowWidth=4096)
                owner[path.relative_to(root).as_posix()] = patient
    return owner


def write_nifti_dataset(
    root: Path, volumes_per_class: int, depth: int, size: int = 40, seed: int = 0
) -> None:
    """A flat dataset of NIfTI volumes `root/<class>/vol<k>.nii.gz`: `depth` phantom slices
    stacked along the third (axial) axis, between two empty slices."""
    import nibabel as nib

    from data.synth import KAGGLE_FOLDERS, phantom

    rng = np.random.default_rng(seed)
    for folder in KAGGLE_FOLDERS:
        for k in range(volumes_per_class):
            stack = [np.rot90(phantom(folder, size, rng), -1) for _ in range(depth)]
            empty = np.zeros((size, size), np.uint8)
            volume = np.stack([empty, *stack, empty], axis=-1).astype(np.float32)
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), root / folder / f"vol{k}.nii.gz")
