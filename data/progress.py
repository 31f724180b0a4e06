"""Progress output for long work: a bar on a terminal, a few plain lines in logs.

Everything goes to stderr so that results on stdout stay machine-readable; `set_quiet(True)`
(the CLI's `--quiet`) silences it.
"""

from __future__ import annotations

import os
import sys
import time

_quiet = os.environ.get("TUMOR_SEARCH_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) progress and log lines for this process and its children."""
    global _quiet
    _quiet = quiet
    if quiet:
        os.environ["TUMOR_SEARCH_QUIET"] = "1"
    else:
        os.environ.pop("TUMOR_SEARCH_QUIET", None)


def is_quiet() -> bool:
    return _quiet


def log(message: str) -> None:
    """One line of progress or information on stderr."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


class Progress:
    """A progress bar over `total` steps.

    On a terminal it redraws one line; elsewhere it prints a line every five seconds and the
    final count, so CI logs and worker logs stay readable.
    """

    def __init__(self, total: int, label: str, min_total: int = 50) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.start = time.perf_counter()
        self._enabled = not _quiet and self.total >= min_total
        self._tty = sys.stderr.isatty()
        self._last_draw = self.start

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self._enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                sys.stderr.write("\r" + self._line(now))
                sys.stderr.flush()
        elif self.done >= self.total or now - self._last_draw >= 5.0:
            # In logs: a line every few seconds and the final count, not a redraw per item.
            self._last_draw = now
            print(self._line(now), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._enabled and self._tty:
            sys.stderr.write("\r" + self._line(time.perf_counter()) + "\n")
            sys.stderr.flush()

    def _line(self, now: float) -> str:
        frac = self.done / self.total if self.total else 1.0
        width = 24
        filled = int(round(frac * width))
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.label}: [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} ({elapsed:.1f}s, {rate:.0f}/s)"
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
