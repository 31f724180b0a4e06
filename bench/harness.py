"""Shared set-up for the benchmarks: phantom data, configs, whole-process timing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def report(name: str, value: float | str, **extra: Any) -> None:
    """One result line, `name: value`, with optional detail after it."""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    detail = "  (" + ", ".join(f"{k} {v}" for k, v in extra.items()) + ")" if extra else ""
    print(f"{name}: {text}{detail}", flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def phantoms(workdir: Path, per_class: int, size: int, seed: int = 0) -> Path:
    from data.synth import synthesize

    out = workdir / f"phantoms-{per_class}-{size}-{seed}"
    if not out.exists():
        synthesize(out, per_class=per_class, size=size, seed=seed)
    return out


def write_yaml(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `python -m search ARGS` as a whole process; return (wall seconds, result)."""
    return timed([sys.executable, "-m", "search", *args], env=env, check=check)


def timed(
    command: list[str], env: dict[str, str] | None = None, check: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    full_env = dict(os.environ, **(env or {}))
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")
    return seconds, result
