"""The decode cache key holds the decode pipeline: Pillow, libjpeg and the decoding code's
version (`DECODE_VERSION`).

Each test changes one component and shows the cache path moves (a miss, never stale data).
The decoder's output on fixed images is pinned to its version: a change to the decoder that
changes a byte fails here until the version is bumped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data.decode
from data.decode import DECODE_VERSION, cache_path, decode_image, load_split, pipeline_version
from data.discovery import scan
from data.split import SplitManifest, SplitPolicy, make_manifest


@pytest.fixture(autouse=True)
def _fresh_pipeline_version() -> Iterator[None]:
    """`pipeline_version` is computed once per process; each test sees its own patches."""
    pipeline_version.cache_clear()
    yield
    pipeline_version.cache_clear()


@pytest.fixture(scope="module")
def manifest(phantom_dir: Path) -> SplitManifest:
    return make_manifest(scan(phantom_dir), SplitPolicy("official", seed=0))


def _other_to_rgb(img: Image.Image) -> Image.Image:
    return Image.eval(img.convert("RGB"), lambda v: 255 - v)  # a changed decoder: negatives


def _pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL

    monkeypatch.setattr(PIL, "__version__", PIL.__version__ + ".post1")


def _libjpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL.features

    real = PIL.features.version
    monkeypatch.setattr(
        PIL.features, "version", lambda name: "99.0" if name == "jpg" else real(name)
    )


def _decode_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.decode, "DECODE_VERSION", DECODE_VERSION + 1)


COMPONENTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "pillow_version": _pillow,
    "libjpeg_version": _libjpeg,
    "decode_version": _decode_version,
}


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_changed_decode_pipeline_component_changes_the_cache_path(
    component: str, manifest: SplitManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = cache_path(manifest, "train", 32, str(tmp_path))
    assert cache_path(manifest, "train", 32, str(tmp_path)) == before  # stable while unchanged
    COMPONENTS[component](monkeypatch)
    pipeline_version.cache_clear()
    assert cache_path(manifest, "train", 32, str(tmp_path)) != before


def test_changed_decoder_misses_instead_of_serving_old_pixels(
    manifest: SplitManifest, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_split(manifest, phantom_dir, "val", 16, cache_dir=str(tmp_path))
    assert load_split(manifest, phantom_dir, "val", 16, cache_dir=str(tmp_path)).from_cache
    monkeypatch.setattr(data.decode, "to_rgb", _other_to_rgb)  # a new decoder, its version
    _decode_version(monkeypatch)
    pipeline_version.cache_clear()
    second = load_split(manifest, phantom_dir, "val", 16, cache_dir=str(tmp_path))
    assert not second.from_cache
    negative = 255 - first.x.astype(np.int16)
    assert np.abs(second.x.astype(np.int16) - negative).max() <= 1  # the new code's pixels


def test_cache_hit_marks_the_entry_used(
    manifest: SplitManifest, phantom_dir: Path, tmp_path: Path
) -> None:
    import os

    load_split(manifest, phantom_dir, "val", 16, cache_dir=str(tmp_path))
    path = cache_path(manifest, "val", 16, str(tmp_path))
    os.utime(path, (1_000_000, 1_000_000))
    assert load_split(manifest, phantom_dir, "val", 16, cache_dir=str(tmp_path)).from_cache
    assert path.stat().st_mtime > 1_000_000  # `cache clear --older-than` goes by last use


# sha256 of `decode_image`'s output on `_fixed_images`, per `DECODE_VERSION`. The images
# need no resize and no JPEG decoder, so the bytes are the same with any Pillow release.
PINNED = {1: "5a7a266d348b361203a37e97cc196aca8da907371310600ae9b0e49e65cad503"}


def _fixed_images(folder: Path) -> list[Path]:
    """PNGs in the modes the decoder converts (L, I;16, RGBA, P, LA, RGB), 12 x 12 pixels."""
    ramp = np.arange(144, dtype=np.uint16).reshape(12, 12)
    images = {
        "l": Image.fromarray((ramp * 255 // 143).astype(np.uint8), "L"),
        "i16": Image.fromarray((ramp * 400 + 1000).astype(np.uint16)),
        "rgba": Image.fromarray(
            np.dstack([ramp % 256, 255 - ramp % 256, ramp % 7 * 30, ramp % 3 * 120]).astype(
                np.uint8
            ),
            "RGBA",
        ),
        "p": Image.fromarray((ramp % 16).astype(np.uint8), "L").convert("P"),
        "la": Image.fromarray((ramp % 256).astype(np.uint8), "L").convert("LA"),
        "rgb": Image.fromarray(np.dstack([ramp % 256] * 3).astype(np.uint8), "RGB"),
    }
    paths = []
    for name, image in images.items():
        paths.append(folder / f"{name}.png")
        image.save(paths[-1])
    return paths


def test_the_decoders_output_is_pinned_to_its_version(tmp_path: Path) -> None:
    digest = hashlib.sha256()
    for path in _fixed_images(tmp_path):
        digest.update(decode_image(path, 12).tobytes())
    assert PINNED.get(DECODE_VERSION) == digest.hexdigest(), (
        "the decoder's output changed: bump data.decode.DECODE_VERSION and pin the new digest"
    )
