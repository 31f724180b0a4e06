"""`common.disk`: a full disk is told apart from other I/O errors, however it is wrapped, and
said in one line. The real ENOSPC of a full file system is in tests/search/test_disk_full.py;
here the file size limit (`RLIMIT_FSIZE`) gives a real EFBIG."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.disk import DiskFullError, cache_skipped, is_disk_full, raise_when_full
from tests.conftest import ROOT


def _wrapped(inner: BaseException) -> RuntimeError:
    """A library's own error raised while handling `inner` (as Keras and h5py do)."""
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("saving failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_full_disk_errors_are_recognised_directly_and_wrapped(code: int) -> None:
    assert is_disk_full(OSError(code, os.strerror(code)))
    assert is_disk_full(_wrapped(OSError(code, os.strerror(code))))


def test_other_errors_are_not_a_full_disk() -> None:
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(_wrapped(FileNotFoundError(errno.ENOENT, "gone")))
    assert not is_disk_full(ValueError("bad value"))


def test_hdf5_error_text_counts_as_a_full_disk() -> None:
    text = "Can't close file (file write failed: errno = 28, error message = 'No space left on device')"
    assert is_disk_full(OSError(text))


def test_raise_when_full_says_what_and_where_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    with pytest.raises(DiskFullError) as caught, raise_when_full(target):
        raise _wrapped(OSError(errno.ENOSPC, "No space left on device"))
    message = str(caught.value)
    assert message == (
        f"no space left on device writing {target}; free some space or choose another --out"
    )
    assert caught.value.path == target and isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(PermissionError), raise_when_full(target):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_skipped_cache_says_so_once_per_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert cache_skipped("decode cache", tmp_path, full)
    assert cache_skipped("decode cache", tmp_path, full)
    assert not cache_skipped("decode cache", tmp_path, OSError(errno.EIO, "I/O error"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"decode cache: no space left on device in {tmp_path}; going on without the cache"
    ]


EFBIG_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from common.disk import DiskFullError
from search.results.outputs import write_result
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us instead of EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    write_result(Path(sys.argv[1]) / "report.html", b"x" * 300_000)
except DiskFullError as exc:
    print(exc)
"""


def test_the_file_size_limit_is_a_full_disk_and_leaves_no_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EFBIG_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"file too large for the file size limit (ulimit -f) writing {tmp_path / 'report.html'}; "
        "free some space or choose another --out"
    )
    assert list(tmp_path.iterdir()) == []
