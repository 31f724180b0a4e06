"""The scan's perceptual hashes are computed once per image and reused from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.discovery import scan
from data.near_dup import HASH_BITS
from data.phash_cache import HashCache
from tests.data.helpers import make_classes, write_image


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUMOR_SEARCH_CACHE", str(tmp_path / "cache"))


def test_scan_reuses_cached_hashes_and_adds_new_ones(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_classes(root, ["a", "b"], 3)
    first = {r.path: r for r in scan(root).images}
    path = HashCache().path
    stored = json.loads(path.read_text())
    assert stored == {r.sha256: r.phash for r in first.values()}
    # A planted value is served as is: the scan did not hash that image again.
    planted = "f" * (HASH_BITS // 4)
    stored[first["a/img0.jpg"].sha256] = planted
    path.write_text(json.dumps(stored))
    write_image(root / "b" / "new.jpg", seed=99)
    second = {r.path: r for r in scan(root).images}
    assert second["a/img0.jpg"].phash == planted
    assert second["a/img1.jpg"].phash == first["a/img1.jpg"].phash
    assert json.loads(path.read_text())[second["b/new.jpg"].sha256] == second["b/new.jpg"].phash


def test_an_unreadable_cache_is_recomputed_not_an_error(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_classes(root, ["a", "b"], 2)
    path = HashCache().path
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    records = scan(root).images
    assert all(len(r.phash) == HASH_BITS // 4 for r in records)
    assert len(json.loads(path.read_text())) == len(records)
