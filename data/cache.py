"""On-disk caches shared by several processes on one machine.

Writes are atomic (a temporary file in the same folder, then `os.replace`) and a per-entry
file lock makes one process compute an entry while the others wait and then reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: `override`, else ``$TUMOR_SEARCH_CACHE``, else the user cache."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("TUMOR_SEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tumor-search"


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for the cache entry at `path` (blocks while another holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def default_mode() -> int:
    """The mode `open()` would give a new file (mkstemp's 0600 is too private for results)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, payload: bytes, durable: bool = True) -> None:
    """Write `payload` to `path` so that readers see either nothing or the whole file.

    Args:
        path: Target file.
        payload: Its whole content.
        durable: Also flush to the disk before the rename (slower; survives power loss).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Save named arrays as one uncompressed ``.npz`` file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Load a ``.npz`` written by `atomic_save_arrays`; None if it is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (FileNotFoundError, OSError, ValueError, EOFError):
        return None
