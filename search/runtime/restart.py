"""A worker restarts its own process when Keras' per-model memory piles up.

Keras with TensorFlow keeps tens of MB per trained model however the session is cleared;
replacing the process (same PID, same arguments, `os.execve`) releases it. What the new
process needs to go on (its first start, the counts so far) travels in the environment.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

RESTART_ENV = "TUMOR_SEARCH_WORKER_RESTART"

# Whether this process is the command itself (`python -m search ...`), which a restart can
# run again; `search.cli.main` says so.
_restartable = False


def allow_restarts(allowed: bool) -> None:
    """Let `MemoryWatch` ask for restarts (only in a process started as the command)."""
    global _restartable
    _restartable = allowed


@dataclass(frozen=True)
class RestartState:
    """What a restarted worker process carries over: its limits count from the first start."""

    started_at: float  # time.time() of the first start
    trials_run: int
    completed: int = 0
    pruned: int = 0
    failed: int = 0

    @classmethod
    def take_from_environment(cls) -> RestartState | None:
        """Read (and remove, so children do not inherit it) the state a restart left."""
        raw = os.environ.pop(RESTART_ENV, None)
        if not raw:
            return None
        started, *counts = raw.split(",")
        return cls(float(started), *(int(n) for n in counts))


def restart_process(state: RestartState) -> None:
    """Replace this process by a fresh run of the same command (same PID, same pipes)."""
    env = dict(os.environ)
    env[RESTART_ENV] = ",".join(
        str(v)
        for v in (state.started_at, state.trials_run, state.completed, state.pruned, state.failed)
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "search", *sys.argv[1:]], env)


def current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class MemoryWatch:
    """Tells when the next trial would take the worker's memory past its limit.

    Args:
        limit: Allowed growth over the memory after the first trial, as a fraction
            (`worker.max_memory_growth`); 0 turns restarts off.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.first: float | None = None
        self.last: float | None = None
        self.growth = 0.0

    def record(self, rss: float) -> None:
        """The memory after a trial (its session cleared)."""
        self.first = rss if self.first is None else self.first
        self.growth = max(rss - self.last, 0.0) if self.last is not None else 0.0
        self.last = rss

    def settle(self, rss: float) -> None:
        """The memory once the worker freed more after the trial's tell: the next trial's
        growth counts from there (`record` would take the drop for the trial's growth)."""
        if self.last is not None:
            self.last = rss

    def over_limit(self) -> bool:
        """Whether one more trial growing like the last would pass the limit (never where
        the process cannot restart)."""
        if not _restartable or self.limit <= 0 or self.first is None or self.last is None:
            return False
        return self.last + self.growth > self.first * (1 + self.limit)
