"""Child processes in a time box, and nvidia-smi sampled every second beside them.

A child prints its figures as ``@@ {json}`` lines (`bench.gpu.probe.emit`); `run_boxed`
keeps every figure printed before the box ended, then stops the child and everything it
started (the launcher of ``run --workers 2`` starts its workers in their own sessions).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MARK = "@@ "


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc; empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_tree(proc: subprocess.Popen[Any], wait: float = 10.0) -> None:
    """SIGTERM the child and its descendants (the service's workers tell their trial and
    exit 143), then SIGKILL whatever is left after `wait` seconds."""
    if proc.poll() is not None:
        return
    tree = [proc.pid, *descendants(proc.pid)]
    _signal_all(tree, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait)
    _signal_all([proc.pid, *descendants(proc.pid), *tree], signal.SIGKILL)
    proc.wait()


@dataclass
class Boxed:
    """What a boxed child left: its figures, whether the box ended it, its exit code."""

    figures: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    returncode: int | None = None
    seconds: float = 0.0
    log: Path | None = None

    def tail(self, lines: int = 3) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip()[:200] for line in text[-lines:])


def _read_figures(stream: IO[str], figures: dict[str, Any], log: IO[str]) -> None:
    for line in stream:
        if line.startswith(MARK):
            with contextlib.suppress(json.JSONDecodeError):
                figures.update(json.loads(line[len(MARK) :]))
        log.write(line)
        log.flush()


def run_boxed(
    command: list[str], env: dict[str, str], box: float, log: Path, cwd: Path | None = None
) -> Boxed:
    """Run `command` for at most `box` seconds; stdout figures kept, all output in `log`."""
    result = Boxed(log=log)
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_read_figures, args=(proc.stdout, result.figures, sink), daemon=True
        )
        reader.start()
        try:
            proc.wait(timeout=max(box, 1.0))
        except subprocess.TimeoutExpired:
            result.timed_out = True
            stop_tree(proc)
        reader.join(timeout=5)
    result.returncode = proc.returncode
    result.seconds = time.monotonic() - start
    return result


class GpuSampler:
    """``nvidia-smi -l 1`` in the background: GPU utilisation (%) and memory (MiB) samples."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, MiB)
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return shutil.which("nvidia-smi") is not None

    def start(self) -> GpuSampler:
        if not self.available:
            return self
        query = "--query-gpu=utilization.gpu,memory.used"
        self._proc = subprocess.Popen(
            ["nvidia-smi", query, "--format=csv,noheader,nounits", "-l", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.monotonic(), float(parts[0]), float(parts[1])))
            except (IndexError, ValueError):
                continue

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def text(self) -> str:
        """``GPU util mean 83 % (n=91 samples, max memory 20480 MiB)``."""
        if not self.available:
            return "GPU util n/a (no nvidia-smi)"
        if not self.samples:
            return "GPU util n/a (no samples)"
        utils = [u for _, u, _ in self.samples]
        memory = max(m for _, _, m in self.samples)
        return (
            f"GPU util mean {sum(utils) / len(utils):.0f} % "
            f"(n={len(utils)} samples, max memory {memory:.0f} MiB)"
        )
