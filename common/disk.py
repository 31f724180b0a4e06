"""A full disk: tell it apart from other I/O errors and say so in one line.

Caches go on without the entry they could not write (`skip_when_full`: one progress line);
result files (models, reports, exports) raise `DiskFullError`, which the CLI prints as one
line with exit code 74 (EX_IOERR). Writers use temporary files that are removed on any
error (`data.cache.atomic_path`), so a full disk never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from common.progress import log

EXIT_DISK_FULL = 74  # EX_IOERR in sysexits.h
DEFAULT_HINT = "free some space or choose another --out"
_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file size limit (ulimit -f)",
}
# h5py reports HDF5's errors as text: "... errno = 28, error message = 'No space left ...'".
_MESSAGES = {os.strerror(code): cause for code, cause in _CAUSES.items()}
_skipped: set[tuple[str, str]] = set()


class DiskFullError(Exception):
    """A result file could not be written: the disk (or quota, or file size limit) is full.

    Attributes:
        path: The file that was being written.
        cause: What was full, e.g. ``no space left on device``.
    """

    exit_code = EXIT_DISK_FULL

    def __init__(self, path: str | os.PathLike[str], cause: str, hint: str = DEFAULT_HINT) -> None:
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"{cause} writing {self.path}; {hint}")


def _own_cause(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in _CAUSES:
        return _CAUSES[exc.errno]
    text = str(exc)
    return next((cause for message, cause in _MESSAGES.items() if message in text), None)


def disk_full_cause(exc: BaseException) -> str | None:
    """What was full if `exc`, or an exception it wraps (``__cause__``/``__context__``), is
    ENOSPC, EDQUOT or EFBIG; else None."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        cause = _own_cause(current)
        if cause is not None:
            return cause
        pending += [current.__context__, current.__cause__]
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it wraps) says the disk, quota or file size limit is full."""
    return disk_full_cause(exc) is not None


@contextlib.contextmanager
def raise_when_full(path: str | os.PathLike[str], hint: str = DEFAULT_HINT) -> Iterator[None]:
    """Turn a full disk met in the block (writing the result file `path`) into `DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        raise DiskFullError(path, cause, hint) from exc


def cache_skipped(label: str, folder: Path, exc: BaseException) -> bool:
    """Log that a cache goes on without its entry when `exc` is a full disk; whether it was.

    One line per cache and folder in a process, however many entries it skips.
    """
    cause = disk_full_cause(exc)
    if cause is None:
        return False
    if (label, str(folder)) not in _skipped:
        _skipped.add((label, str(folder)))
        log(f"{label}: {cause} in {folder}; going on without the cache")
    return True


@contextlib.contextmanager
def skip_when_full(label: str, folder: Path, remove: Iterable[Path] = ()) -> Iterator[None]:
    """Run a cache write; on a full disk remove `remove` (the entry's other files), log one
    line (`cache_skipped`) and go on as if the block had finished."""
    try:
        yield
    except Exception as exc:
        if not cache_skipped(label, folder, exc):
            raise
        for path in remove:
            with contextlib.suppress(OSError):
                path.unlink()
