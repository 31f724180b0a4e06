"""SIGINT and SIGTERM in a worker: an interrupt raised where it is safe to stop.

A trial is shielded from its claim to its tell, so a result that training finished is
always told; training itself is interruptible, so Ctrl-C stops a trial at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class WorkerInterrupted(BaseException):  # noqa: N818 - an interrupt, like KeyboardInterrupt
    """SIGINT or SIGTERM arrived; raised out of whatever the worker was doing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Signals:
    """Turns SIGINT/SIGTERM into `WorkerInterrupted`, except inside `shielded()` blocks
    (a trial from its claim to its tell, storage writes), where the interrupt waits for the
    next `check()`; `interruptible()` opens a shielded block again (training)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self._defer = 0
        self._open = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        if self._defer == 0 or self._open:
            raise WorkerInterrupted(signum)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Hold signals off until the block ends (then `check()` raises them)."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    @contextmanager
    def interruptible(self) -> Iterator[Callable[[], None]]:
        """Deliver signals at once inside the block, even within a shielded one: training
        stops at once, while what follows it (recording and telling the result) is shielded.

        Yields `check`, for the block to call between steps: the handler's exception can
        be lost where it lands (Python ignores one raised inside a finalizer, and library
        code may catch it), while `pending` stays set."""
        previous, self._open = self._open, True
        try:
            self.check()
            yield self.check
        finally:
            self._open = previous

    def check(self) -> None:
        """Raise the interrupt that arrived during a shielded block, if any."""
        if self.pending is not None:
            raise WorkerInterrupted(self.pending)
