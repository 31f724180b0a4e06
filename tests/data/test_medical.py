"""DICOM files and NIfTI volumes as slices (`data.medical`), on pydicom's and nibabel's
bundled files and on files written here with pydicom and nibabel."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data.errors import DataError
from data.medical import (
    MedicalSettings,
    NotAnImage,
    read_slice,
    read_slices,
    slice_path,
    split_slice_path,
)
from tests.data.helpers import write_dicom

SETTINGS = MedicalSettings()


def _bundled(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    assert found is not None, f"pydicom's bundled {name} is missing"
    return Path(found)


def test_bundled_dicom_files_in_every_transfer_syntax_decode_alike() -> None:
    plain = read_slices(_bundled("MR_small.dcm"), SETTINGS)
    assert len(plain) == 1 and plain[0].key == "" and plain[0].pixels.shape == (64, 64)
    assert plain[0].pixels.dtype == np.uint8 and plain[0].group == "patient:4MR1"
    for compressed in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):  # lossless
        other = read_slices(_bundled(compressed), SETTINGS)
        assert np.array_equal(other[0].pixels, plain[0].pixels), compressed
    assert 0 < plain[0].pixels.mean() < 255 and plain[0].pixels.std() > 20


def test_multi_frame_files_give_a_slice_per_frame() -> None:
    dose = read_slices(_bundled("rtdose.dcm"), SETTINGS)
    assert [s.key for s in dose] == [f"frame={k}" for k in range(1, 16)]
    rgb = read_slices(_bundled("SC_rgb_rle_2frame.dcm"), SETTINGS)  # colour to luminance
    assert [s.key for s in rgb] == ["frame=1", "frame=2"]
    assert all(s.pixels.ndim == 2 and s.pixels.dtype == np.uint8 for s in rgb)
    assert not np.array_equal(rgb[0].pixels, rgb[1].pixels)
    assert np.array_equal(read_slice(_bundled("rtdose.dcm"), "frame=3", SETTINGS), dose[2].pixels)
    with pytest.raises(DataError, match="no slice frame=16"):
        read_slice(_bundled("rtdose.dcm"), "frame=16", SETTINGS)


def test_a_structured_report_holds_no_image_and_a_corrupt_file_is_unreadable(
    tmp_path: Path,
) -> None:
    with pytest.raises(NotAnImage, match="no pixel data"):
        read_slices(_bundled("test-SR.dcm"), SETTINGS)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(_bundled("MR_small.dcm").read_bytes()[:3000])
    with pytest.raises(DataError):
        read_slices(broken, SETTINGS)


def test_rescale_window_and_monochrome1(tmp_path: Path) -> None:
    """Modality LUT then the file's window: stored 0..1000 with intercept -1000 and a window
    of centre -500, width 1001 maps stored 0 to black and 1000 to white; MONOCHROME1 is the
    same image inverted; without a window, the percentiles set it."""
    ramp = np.tile(np.linspace(0, 1000, 32).astype(np.uint16), (32, 1))
    common = {"RescaleSlope": 1, "RescaleIntercept": -1000}
    windowed = write_dicom(
        tmp_path / "w.dcm", ramp, "P1", WindowCenter=-500, WindowWidth=1001, **common
    )
    pixels = read_slices(windowed, SETTINGS)[0].pixels
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255
    assert abs(int(pixels[0, 16]) - 132) <= 2  # the ramp's middle, linearly
    inverted = write_dicom(
        tmp_path / "m1.dcm", ramp, "P1", WindowCenter=-500, WindowWidth=1001,
        PhotometricInterpretation="MONOCHROME1", **common,
    )  # fmt: skip
    assert np.array_equal(read_slices(inverted, SETTINGS)[0].pixels, 255 - pixels)
    narrow = write_dicom(tmp_path / "n.dcm", ramp, "P1", WindowCenter=-750, WindowWidth=100)
    assert read_slices(narrow, SETTINGS)[0].pixels.mean() > 200  # a window the ramp is above
    percentile = MedicalSettings(dicom_window="percentile")
    assert read_slices(narrow, percentile)[0].pixels.mean() == pytest.approx(127.5, abs=4)


def test_enhanced_multi_frame_files_rescale_and_window_each_frame(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    values = np.full((2, 8, 8), 600, dtype=np.uint16)

    def frame(intercept: float, centre: float) -> Dataset:
        transform, window, item = Dataset(), Dataset(), Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1, intercept
        window.WindowCenter, window.WindowWidth = centre, 401
        item.PixelValueTransformationSequence = Sequence([transform])
        item.FrameVOILUTSequence = Sequence([window])
        return item

    path = write_dicom(
        tmp_path / "enhanced.dcm", values, "P9",
        PerFrameFunctionalGroupsSequence=Sequence([frame(0, 600), frame(-400, 400)]),
    )  # fmt: skip
    first, second = read_slices(path, SETTINGS)
    assert int(first.pixels.mean()) == 128  # 600 at the centre of its window
    assert int(second.pixels.mean()) == 0  # 200 after its rescale, at the bottom of its window


def test_slice_paths_round_trip() -> None:
    assert slice_path("a/b.dcm", "") == "a/b.dcm"
    assert split_slice_path("a/b.dcm") == ("a/b.dcm", "")
    assert split_slice_path("a/v.nii.gz#axial=3") == ("a/v.nii.gz", "axial=3")
    assert split_slice_path("a/odd#name.jpg") == ("a/odd#name.jpg", "")


def _nibabel(name: str) -> Path:
    from nibabel.testing import data_path

    return Path(data_path) / name


def test_bundled_nifti_volumes_slice_along_the_chosen_axis() -> None:
    import nibabel as nib

    path = _nibabel("anatomical.nii")
    shape = nib.as_closest_canonical(nib.load(path)).shape
    everything = MedicalSettings(volume_min_intensity=0.0)
    axial = read_slices(path, everything)
    assert [s.key for s in axial] == [f"axial={k}" for k in range(1, shape[2] + 1)]
    assert axial[0].pixels.shape == (shape[1], shape[0])  # anterior up: rows run along y
    coronal = read_slices(path, MedicalSettings(volume_axis="coronal", volume_min_intensity=0))
    assert len(coronal) == shape[1] and coronal[0].pixels.shape == (shape[2], shape[0])
    middle = read_slices(path, MedicalSettings(volume_range=(0.25, 0.75), volume_min_intensity=0))
    assert 0 < len(middle) < len(axial) and middle[0].key != "axial=1"
    dark = read_slices(path, SETTINGS)  # the near-empty slices at the ends are skipped
    assert 0 < len(dark) <= len(axial)
    assert all(s.pixels.mean() >= 0.05 * 255 for s in dark)
    four_d = read_slices(_nibabel("example4d.nii.gz"), everything)  # its first volume
    assert len(four_d) == nib.load(_nibabel("example4d.nii.gz")).shape[2]


def test_a_volume_stored_flipped_gives_the_canonical_slices(tmp_path: Path) -> None:
    import nibabel as nib

    image = nib.load(_nibabel("anatomical.nii"))
    data = np.asarray(image.dataobj)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flipped = nib.Nifti1Image(data[::-1].copy(), image.affine @ flip)
    nib.save(flipped, tmp_path / "flipped.nii.gz")
    shutil.copy(_nibabel("anatomical.nii"), tmp_path / "plain.nii")
    settings = MedicalSettings(volume_min_intensity=0.0)
    plain = read_slices(tmp_path / "plain.nii", settings)
    other = read_slices(tmp_path / "flipped.nii.gz", settings)
    assert [s.key for s in plain] == [s.key for s in other]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(plain, other, strict=True))
