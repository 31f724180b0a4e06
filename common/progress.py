"""Progress output for long work: a tqdm bar on a terminal, a few plain lines in logs.

Everything goes to stderr so that results on stdout stay machine-readable; `set_quiet(True)`
(the CLI's `--quiet`) silences it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tqdm import tqdm

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


def task_prefix() -> str:
    """``[task 3] `` in a Slurm array task, ``[pod 3] `` in a pod of a Kubernetes Indexed
    Job, else nothing: workers that a cluster started tell their lines apart in one log."""
    for variable, label in (("SLURM_ARRAY_TASK_ID", "task"), ("JOB_COMPLETION_INDEX", "pod")):
        value = os.environ.get(variable, "").strip()
        if value:
            return f"[{label} {value}] "
    return ""


def log(message: str) -> None:
    """One line of progress or information on stderr (prefixed by `task_prefix`)."""
    if not _quiet:
        print(task_prefix() + message, file=sys.stderr, flush=True)


# Today's line: a 24-character bar of "#" on ".", the count, seconds and items per second.
_BAR_FORMAT = "{desc}: [{bar:24}] {n}/{total} ({elapsed_s:.1f}s, {per_s:.0f}/s)"
_BAR_CHARS = ".#"  # tqdm's ascii charset: the empty cell first, the full cell last
_LOG_EVERY_S = 5.0


def _per_s(done: float, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


def _format_line(label: str, done: int, total: int, elapsed: float) -> str:
    """The progress line as the terminal bar draws it, for logs."""
    return tqdm.format_meter(
        done,
        total,
        elapsed,
        prefix=label,
        ascii=_BAR_CHARS,
        bar_format=_BAR_FORMAT,
        per_s=_per_s(done, elapsed),
    )


class _TerminalBar(tqdm):
    """tqdm with the mean rate since the start (`per_s`) and lines never cut to the width."""

    monitor_interval = 0  # no monitor thread: the bar redraws on update, and workers fork

    @property
    def format_dict(self) -> dict[str, Any]:
        values = dict(super().format_dict)
        values["per_s"] = _per_s(values["n"], values["elapsed"])
        values["ncols"] = None  # as before: never cut (a pty of width 0 would drop bar_format)
        return values


class Progress:
    """A progress bar over `total` steps.

    On a terminal tqdm redraws one line; elsewhere it prints a line every five seconds and
    the final count, so CI logs and worker logs stay readable.
    """

    def __init__(self, total: int, label: str, min_total: int = 50) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.start = time.perf_counter()
        self._enabled = not _quiet and self.total >= min_total
        self._last_line = self.start
        self._bar: tqdm | None = None
        if self._enabled and sys.stderr.isatty():
            self._bar = _TerminalBar(
                total=self.total,
                desc=label,
                file=sys.stderr,
                bar_format=_BAR_FORMAT,
                ascii=_BAR_CHARS,
                mininterval=0.1,
                miniters=1,
                position=0,  # one line, also when bars overlap (no cursor moves)
                nrows=2,  # tqdm hides a bar below the last row: a pty may report 0 rows
                leave=True,
            )

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self._enabled:
            return
        now = time.perf_counter()
        if self.done >= self.total or now - self._last_line >= _LOG_EVERY_S:
            # In logs: a line every few seconds and the final count, not a redraw per item.
            self._last_line = now
            print(self._line(now), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()  # draws the final count and ends the line

    def _line(self, now: float) -> str:
        return _format_line(self.label, self.done, self.total, now - self.start)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
