"""Progress goes to stderr, results to stdout, and --quiet silences the progress."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


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
