"""Perceptual hashes of earlier scans, keyed by the sha256 of an image's bytes.

`data.discovery.scan` decodes every image to check it; the perceptual hash
(`data.near_dup.perceptual_hash`) about doubles that cost, so a scan reuses the hashes of
images it has seen before. One JSON file, ``phash/v<PHASH_VERSION>.json`` in the cache root,
maps sha256 to hash; a new version of the hash code gets a new file. Writers merge under the file's lock and
replace it atomically; a cache that cannot be read or written is skipped (the hashes are
recomputed), never an error; a full disk says so in one progress line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common.disk import cache_skipped
from data.cache import atomic_write_bytes, cache_root, entry_lock

PHASH = "phash"


# The version of `perceptual_hash` (and `_normalised`, which it calls): bump it with any
# change that changes a hash, so that cached hashes of the old code are not served.
PHASH_VERSION = 1


def _read(path: Path) -> dict[str, str]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


class HashCache:
    """sha256 -> perceptual hash; `get` and `put` may be called from several threads."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.path = cache_root(root) / PHASH / f"v{PHASH_VERSION}.json"
        self.known = _read(self.path)
        self.new: dict[str, str] = {}

    def get(self, sha256: str) -> str | None:
        return self.known.get(sha256)

    def put(self, sha256: str, phash: str) -> None:
        self.new[sha256] = phash

    def save(self) -> None:
        """Merge the new hashes into the file (nothing to do when there are none)."""
        if not self.new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with entry_lock(self.path):
                merged = {**_read(self.path), **self.new}
                payload = json.dumps(merged, separators=(",", ":"), sort_keys=True).encode()
                atomic_write_bytes(self.path, payload, durable=False)
        except OSError as exc:  # a full disk says so in one line; other errors stay quiet
            cache_skipped("phash cache", self.path.parent, exc)
            return
        self.known.update(self.new)
        self.new.clear()
