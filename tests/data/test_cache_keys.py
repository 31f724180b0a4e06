"""The decode cache key holds the decode pipeline: Pillow, libjpeg and the decoding code.

Each test changes one component and shows the cache path moves (a miss, never stale data).
`code_hash` sees code and the constants it reads, not comments, docstrings or layout.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import data.decode
from data.cache import code_hash
from data.decode import cache_path, load_split, pipeline_version
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


def _other_decode_entries(*args: Any) -> np.ndarray:
    return np.zeros((0,), dtype=np.uint8)


def _pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL

    monkeypatch.setattr(PIL, "__version__", PIL.__version__ + ".post1")


def _libjpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL.features

    real = PIL.features.version
    monkeypatch.setattr(
        PIL.features, "version", lambda name: "99.0" if name == "jpg" else real(name)
    )


def _to_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.decode, "to_rgb", _other_to_rgb)


def _decode_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.decode, "decode_image", _other_to_rgb)


def _decode_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.decode, "_decode_entries", _other_decode_entries)


COMPONENTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "pillow_version": _pillow,
    "libjpeg_version": _libjpeg,
    "to_rgb_code": _to_rgb,
    "decode_image_code": _decode_image,
    "decode_entries_code": _decode_entries,
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
    monkeypatch.setattr(data.decode, "to_rgb", _other_to_rgb)
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


def _function(tmp_path: Path, name: str, source: str) -> Callable[..., Any]:
    """`f` from `source`, loaded as module ``probe`` (so only the source differs)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location("probe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.f


BASE = '''
LIMIT = 1


def f(x):
    """Add the limit."""
    return x + LIMIT
'''


def test_code_hash_ignores_comments_docstrings_and_layout(tmp_path: Path) -> None:
    reworded = '''
    LIMIT = 1


    def f(x):  # a comment
        """Another docstring, longer."""

        return (x +
                LIMIT)
    '''
    assert code_hash(_function(tmp_path, "a", BASE)) == code_hash(
        _function(tmp_path, "b", reworded)
    )


def test_code_hash_sees_code_and_the_constants_it_reads(tmp_path: Path) -> None:
    base = code_hash(_function(tmp_path, "a", BASE))
    assert code_hash(_function(tmp_path, "b", BASE.replace("x + LIMIT", "x - LIMIT"))) != base
    assert code_hash(_function(tmp_path, "c", BASE.replace("LIMIT = 1", "LIMIT = 2"))) != base


def test_code_hash_follows_the_project_functions_it_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    before = code_hash(data.decode.decode_image)  # calls to_rgb by its global name
    monkeypatch.setattr(data.decode, "to_rgb", _other_to_rgb)
    assert code_hash(data.decode.decode_image) != before
