"""The results file: a header per run, then one line per part, appended as each part ends.

Every line names its part (``- (a)`` ...), backend, device, time and Keras version, so a line
read alone (or a run cut short after it) still says what was measured where.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HEADER = """# GPU proof results

Appended by `bench/gpu/check` (see README.md): one section per run, one line per part as
soon as that part ends. (a) training images/s, (b) feature-cache extraction, (c) a study in
a time box (`--workers`, default 1), (d) twice as many workers on the one GPU, (w) the
carried wheel set (dry runs).
"""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _nvidia_smi(query: str) -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def device_name() -> str:
    """``NVIDIA H100 80GB HBM3 (driver 570.86, 81559 MiB)``, or the CPU when there is no GPU."""
    gpus = _nvidia_smi("name,driver_version,memory.total")
    if gpus:
        name, driver, memory = (part.strip() for part in gpus[0].split(",")[:3])
        more = f" x{len(gpus)}" if len(gpus) > 1 else ""
        return f"{name}{more} (driver {driver}, {memory})"
    return f"CPU {platform.machine()} x{os.cpu_count()} (no nvidia-smi)"


class Report:
    """Appends to the results file; each write is flushed to disk before it returns."""

    def __init__(self, path: Path, device: str) -> None:
        self.path = path
        self.device = device
        self.keras = version("keras")
        self.lines: list[str] = []
        self.failures: list[str] = []

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", encoding="utf-8") as handle:
            if new:
                handle.write(HEADER)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def start(self, mode: str, settings: str) -> None:
        py = ".".join(map(str, sys.version_info[:3]))
        self._append(
            f"\n## {now()} · {self.device} · {mode}\n\n"
            f"keras {self.keras}, jax {version('jax')}, torch {version('torch')}, "
            f"tensorflow {version('tensorflow')}, optuna {version('optuna')}, python {py}. "
            f"{settings}\n\n"
        )

    def line(self, part: str, backend: str, text: str, failed: bool = False) -> None:
        """One part's figures: printed, and appended to the file at once."""
        row = f"- ({part}) {backend}: {text} · {self.device} · {now()} · keras {self.keras}"
        self.lines.append(row)
        if failed:
            self.failures.append(row)
        print(row, flush=True)
        self._append(row + "\n")

    def summary(self, seconds: float) -> None:
        state = f"{len(self.failures)} part(s) failed or cut short" if self.failures else "all done"
        text = f"\nSummary: {len(self.lines)} lines in {seconds:.0f} s, {state}; {self.path}\n"
        print(text, flush=True)
        self._append(f"- summary: {len(self.lines)} lines in {seconds:.0f} s, {state}\n")
