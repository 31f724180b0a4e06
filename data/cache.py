"""On-disk caches shared by several processes on one machine.

Writes are atomic (`atomic_path`: a temporary file in the same folder, then `os.replace`) and
a per-entry file lock (`filelock`) makes one process compute an entry while the others wait
and then reuse it.
Keys include the version of the code that produces an entry's bytes (`DECODE_VERSION`,
`FEATURES_VERSION`, `PHASH_VERSION`, bumped with the code), so changed code misses instead of
serving what the old code made.

Layout: ``images/.../<split>.npz`` (one file per entry, `data.decode`) and
``features/<key>/`` (one folder per entry, `search.training.feature_cache`); each entry has a
``<file>.lock`` beside its data file (`search.cli.cache` lists and removes entries).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from common.disk import is_disk_full

IMAGES = "images"
FEATURES = "features"
FEATURES_FILE = "features.npz"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: `override`, else ``$TUMOR_SEARCH_CACHE``, else the user cache."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("TUMOR_SEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tumor-search"


def lock_path(path: Path) -> Path:
    """The lock file of the cache entry whose data file is `path`."""
    return path.with_name(path.name + ".lock")


def _acquire(path: Path, wait: bool) -> FileLock | None:
    """Lock `path`'s lock file; None when `wait` is False and another process holds it.

    `cache clear` deletes an entry's files, its lock file included, while it holds that lock:
    filelock drops a lock it won on a file no longer on disk (st_nlink 0) and locks the file
    now there instead, so a waiter never holds a deleted lock file beside a new holder.
    """
    lock = FileLock(lock_path(path))
    while True:
        try:
            lock.acquire(blocking=wait)
        except Timeout:
            return None
        except FileNotFoundError:  # `cache clear` removed the entry's folder: make it again
            continue
        return lock


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for the cache entry at `path` (blocks while another holds it).

    A disk too full for the lock file (or its folder): go on unlocked; the cache write that
    follows meets the full disk too and skips the entry (`common.disk.skip_when_full`).
    """
    try:
        lock = _acquire(path, wait=True)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        lock = None
    if lock is None:
        yield
        return
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def try_entry_lock(path: Path) -> Iterator[bool]:
    """Lock the cache entry at `path` if no other process holds it; yields whether it did."""
    lock = _acquire(path, wait=False)
    if lock is None:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def touch(path: Path) -> None:
    """Mark a cache entry as used now: `cache clear --older-than` goes by last use."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _umask_from_status(status: str) -> int | None:
    """The ``Umask:`` line of ``/proc/<pid>/status`` (Linux 4.7 and later), as a number."""
    for line in status.splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return None


@functools.cache
def _umask() -> int:
    """The process umask, read once without changing it (setting and restoring it, the only
    portable way, would race with threads creating files meanwhile): from
    ``/proc/self/status`` on Linux; elsewhere set and restored once, on first use."""
    try:
        umask = _umask_from_status(Path("/proc/self/status").read_text())
    except OSError:
        umask = None
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def default_mode() -> int:
    """The mode `open()` would give a new file (mkstemp's 0600 is too private for results)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(target: Path, durable: bool = True, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `target` that replaces `target` when the block ends.

    Readers see either the old file or the whole new one. The caller writes the temporary
    file by its path; on leaving the block it gets the mode `open()` would give and is renamed
    over `target`; on any error (a full disk included, even while the file is still open) it
    is removed instead, so no partial file is left.

    Args:
        target: The file to write.
        durable: Flush the file to the disk before the rename (slower; survives power loss).
        suffix: End of the temporary name (writers such as Keras insist on their extension).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, default_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: Path, payload: bytes, durable: bool = True) -> None:
    """Write `payload` to `path` so that readers see either nothing or the whole file.

    Args:
        path: Target file.
        payload: Its whole content.
        durable: Also flush to the disk before the rename (slower; survives power loss).
    """
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(payload)


def atomic_save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Save named arrays as one uncompressed ``.npz`` file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # a handle: given a name, numpy would append ".npz" to it


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Load a ``.npz`` written by `atomic_save_arrays`; None if it is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (FileNotFoundError, OSError, ValueError, EOFError):
        return None
