from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.decode import cache_path, decode_image, load_split
from data.discovery import scan
from data.errors import DataError
from data.split import SplitPolicy, make_manifest
from tests.data.helpers import write_image


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16"])
def test_every_mode_decodes_to_uint8_rgb(tmp_path: Path, mode: str) -> None:
    ext = ".jpg" if mode == "CMYK" else ".png"
    path = write_image(tmp_path / f"img{ext}", seed=1, mode=mode, size=40)
    arr = decode_image(path, 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    if mode in ("L", "I;16"):
        assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
    if mode == "I;16":
        assert arr.max() > 200  # rescaled, not clipped to 255 or crushed


def test_rgba_transparency_becomes_black(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    img.save(tmp_path / "clear.png")
    assert decode_image(tmp_path / "clear.png", 8).max() == 0


def test_decode_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    with pytest.raises(DataError, match="bad.jpg"):
        decode_image(bad, 16)


def test_second_load_comes_from_the_cache(phantom_dir: Path, tmp_path: Path) -> None:
    manifest = make_manifest(scan(phantom_dir), SplitPolicy("official", seed=0))
    first = load_split(manifest, phantom_dir, "train", 32, cache_dir=str(tmp_path))
    second = load_split(manifest, phantom_dir, "train", 32, cache_dir=str(tmp_path))
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.x, second.x) and np.array_equal(first.y, second.y)
    assert first.x.shape == (len(manifest.split("train")), 32, 32, 3)
    assert sorted(set(first.y.tolist())) == [0, 1, 2, 3]
    other_size = load_split(manifest, phantom_dir, "train", 24, cache_dir=str(tmp_path))
    assert not other_size.from_cache


def test_changed_dataset_gets_a_new_cache(phantom_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(phantom_dir, copy)
    policy = SplitPolicy("official", seed=0)
    before = make_manifest(scan(copy), policy)
    load_split(before, copy, "val", 16, cache_dir=str(tmp_path / "c"))
    write_image(copy / "Training" / "no_tumor" / "extra.jpg", seed=5)
    after = make_manifest(scan(copy), policy)
    assert cache_path(before, "val", 16, str(tmp_path / "c")) != cache_path(
        after, "val", 16, str(tmp_path / "c")
    )
    assert not load_split(after, copy, "val", 16, cache_dir=str(tmp_path / "c")).from_cache


def test_damaged_cache_file_is_rebuilt(phantom_dir: Path, tmp_path: Path) -> None:
    manifest = make_manifest(scan(phantom_dir), SplitPolicy("official", seed=0))
    path = cache_path(manifest, "val", 16, str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    result = load_split(manifest, phantom_dir, "val", 16, cache_dir=str(tmp_path))
    assert not result.from_cache and result.x.shape[0] == len(manifest.split("val"))
