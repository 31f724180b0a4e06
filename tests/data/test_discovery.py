from __future__ import annotations

from pathlib import Path

import pytest

from data.discovery import scan
from data.errors import DataError
from tests.data.helpers import make_classes, truncated_jpeg, write_image


def test_kaggle_classification_layout_maps_class_names(phantom_dir: Path) -> None:
    dataset = scan(phantom_dir)
    assert dataset.layout == "kaggle_classification"
    assert dataset.classes == ("glioma", "meningioma", "no_tumor", "pituitary")
    assert len(dataset.images) == 64
    assert {r.source for r in dataset.images} == {"Training", "Testing"}


def test_brain_tumor_mri_dataset_layout(tmp_path: Path) -> None:
    for split in ("Training", "Testing"):
        make_classes(
            tmp_path / split, ["glioma", "meningioma", "notumor", "pituitary"], 3, seed=len(split)
        )
    dataset = scan(tmp_path)
    assert dataset.layout == "brain_tumor_mri"
    assert dataset.classes == ("glioma", "meningioma", "no_tumor", "pituitary")
    assert dataset.per_class() == {"glioma": 6, "meningioma": 6, "no_tumor": 6, "pituitary": 6}


def test_flat_layout_keeps_unknown_class_names(tmp_path: Path) -> None:
    make_classes(tmp_path, ["glioma_tumor", "Astrocytoma", "no_tumor"], 2)
    dataset = scan(tmp_path)
    assert dataset.layout == "flat"
    assert dataset.classes == ("Astrocytoma", "glioma", "no_tumor")
    assert not dataset.has_official_test


def test_wrapping_folder_is_descended(tmp_path: Path) -> None:
    make_classes(tmp_path / "archive" / "Training", ["glioma", "notumor"], 2)
    make_classes(tmp_path / "archive" / "Testing", ["glioma", "notumor"], 1, seed=9)
    dataset = scan(tmp_path)
    assert dataset.layout == "brain_tumor_mri"
    assert dataset.images[0].path.startswith("Testing/") or dataset.images[0].path.startswith(
        "Training/"
    )


def test_junk_and_unreadable_files_are_skipped_and_reported(tmp_path: Path) -> None:
    make_classes(tmp_path, ["a", "b"], 2)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    truncated_jpeg(tmp_path / "a" / "truncated.jpg", seed=1)
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    (tmp_path / "b" / "text.png").write_text("this is text with an image extension")
    dataset = scan(tmp_path)
    assert dataset.per_class() == {"a": 2, "b": 2}
    assert dataset.unreadable == ("a/truncated.jpg", "b/empty.jpg", "b/text.png")
    assert "a/notes.txt" in dataset.ignored and "a/Thumbs.db" in dataset.ignored
    assert all(".DS_Store" not in r.path for r in dataset.images)


def test_grayscale_and_rgba_png_are_readable(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "gray.png", seed=1, mode="L")
    write_image(tmp_path / "b" / "rgba.png", seed=2, mode="RGBA")
    dataset = scan(tmp_path)
    assert len(dataset.images) == 2 and not dataset.unreadable


def test_same_file_name_in_training_and_testing_keeps_both(tmp_path: Path) -> None:
    write_image(tmp_path / "Training" / "glioma_tumor" / "image(1).jpg", seed=1)
    write_image(tmp_path / "Testing" / "glioma_tumor" / "image(1).jpg", seed=2)
    write_image(tmp_path / "Training" / "no_tumor" / "image(1).jpg", seed=3)
    write_image(tmp_path / "Testing" / "no_tumor" / "image(1).jpg", seed=4)
    paths = [r.path for r in scan(tmp_path).images]
    assert len(paths) == 4 and len(set(paths)) == 4


def test_duplicates_are_grouped_by_content(tmp_path: Path) -> None:
    write_image(tmp_path / "Training" / "glioma" / "x.jpg", seed=7)
    write_image(tmp_path / "Testing" / "glioma" / "y.jpg", seed=7)
    write_image(tmp_path / "Training" / "notumor" / "z.jpg", seed=8)
    write_image(tmp_path / "Testing" / "notumor" / "w.jpg", seed=9)
    assert scan(tmp_path).duplicates() == [["Testing/glioma/y.jpg", "Training/glioma/x.jpg"]]


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("missing", "not found"),
        ("empty", "no class folders"),
        ("single", "at least 2 classes"),
        ("all_unreadable", "no readable image"),
    ],
)
def test_bad_folders_raise_data_error(tmp_path: Path, setup: str, fragment: str) -> None:
    root = tmp_path / "data"
    if setup != "missing":
        root.mkdir()
    if setup == "single":
        make_classes(root, ["glioma"], 3)
    if setup == "all_unreadable":
        make_classes(root, ["glioma"], 2)
        (root / "meningioma").mkdir()
        (root / "meningioma" / "a.jpg").write_bytes(b"")
        truncated_jpeg(root / "meningioma" / "b.jpg", seed=2)
    with pytest.raises(DataError, match=fragment):
        scan(root)
