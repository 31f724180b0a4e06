"""Progress goes to stderr, results to stdout, and --quiet silences the progress."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


def test_synth_shows_progress_unless_quiet(tmp_path: Path) -> None:
    loud = run_cli(
        "data", "synth", "--out", str(tmp_path / "a"), "--per-class", "60", "--size", "24"
    )
    assert loud.returncode == 0 and "synthesising phantoms" in loud.stderr
    assert loud.stdout.startswith("wrote 240 phantom images")
    quiet = run_cli(
        "data",
        "synth",
        "--out",
        str(tmp_path / "b"),
        "--per-class",
        "60",
        "--size",
        "24",
        "--quiet",
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith("wrote 240 phantom images")
    before = run_cli("-q", "data", "synth", "--out", str(tmp_path / "c"), "--per-class", "60")
    assert before.returncode == 0 and before.stderr == ""  # also accepted before the command


def _run_on_a_terminal(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run `python -m search ARGS` with stderr on a pseudo-terminal; (code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "TUMOR_SEARCH_QUIET"}
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "search", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # Linux: EIO once the child has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout.decode(), b"".join(chunks).decode()


def test_the_terminal_bar_reads_as_before(tmp_path: Path) -> None:
    code, stdout, stderr = _run_on_a_terminal(
        "data", "synth", "--out", str(tmp_path / "a"), "--per-class", "60", "--size", "24"
    )
    assert code == 0, stderr
    assert stdout.startswith("wrote 240 phantom images")
    # The bar redraws one line with "\r"; the terminal turns its final "\n" into "\r\n".
    assert stderr.endswith("\r\n")
    frames = [f.rstrip(" ") for f in stderr.removesuffix("\r\n").split("\r") if f]
    line = r"synthesising phantoms: \[{bar}\] {done}/240 \(\d+\.\ds, \d+/s\)"
    for frame in frames:
        assert re.fullmatch(line.format(bar="[#.]{24}", done=r"\d+"), frame), frame
    assert re.fullmatch(line.format(bar="#" * 24, done="240"), frames[-1]), frames[-1]


@pytest.mark.parametrize(
    ("variable", "prefix"),
    [("SLURM_ARRAY_TASK_ID", "[task 3] "), ("JOB_COMPLETION_INDEX", "[pod 3] ")],
)
def test_log_lines_of_a_cluster_task_carry_its_index(
    variable: str, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A worker that Slurm (array job) or Kubernetes (Indexed Job) started prefixes its lines
    with its index, so that the lines of N workers in one log are told apart."""
    from common import progress

    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setattr(progress, "_quiet", False)
    progress.log("plain")
    monkeypatch.setenv(variable, "3")
    progress.log("worker started")
    assert capsys.readouterr().err.splitlines() == ["plain", f"{prefix}worker started"]
