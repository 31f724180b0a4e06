"""The launcher passes a SIGTERM on to every child, even one that arrives while it is still
starting them: no child is left running its trials to the end."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from search.runtime import launcher

# Stands for a worker: it ends with 143 on SIGTERM, as `tumor-search worker` does, and
# otherwise works for a minute.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
print("started", flush=True)
time.sleep(60)
"""


def test_a_sigterm_while_children_start_reaches_every_child(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(launcher, "_worker_command", lambda *a, **k: [sys.executable, "-c", CHILD])
    started: list[Any] = []
    real_start = launcher._start_worker

    def start_then_signal(*args: Any, **kwargs: Any) -> Any:
        proc, pump = real_start(*args, **kwargs)
        started.append(proc)
        if len(started) == 1:  # SIGTERM lands while the launcher is starting its children
            os.kill(os.getpid(), signal.SIGTERM)
        return proc, pump

    monkeypatch.setattr(launcher, "_start_worker", start_then_signal)
    specs = launcher.worker_specs(3, None)
    begin = time.monotonic()
    try:
        code = launcher.launch(specs, "s", "sqlite:///unused.db", None, None)
    finally:
        for proc in started:  # never leave a child behind, whatever happened
            if proc.poll() is None:
                proc.kill()
    assert code == 143
    assert time.monotonic() - begin < 30  # no child ran on for its minute
    assert started and all(proc.returncode in (143, -signal.SIGTERM) for proc in started)
