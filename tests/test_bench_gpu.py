"""`bench/gpu/check --dry-run`: every part of the GPU proof runs here on CPU at tiny sizes,
on every Keras backend installed, and the wheels carried to the GPU machine resolve offline
(.whl/ is downloaded first when it is missing), so the script cannot rot between loans of a
GPU machine."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PARTS = ("w", "a", "b", "c", "d")


@pytest.mark.slow  # about 100 s on 2 CPU cores; downloads .whl/ (14 MB) when it is missing
@pytest.mark.timeout(600)
def test_dry_run_writes_a_line_for_every_part(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [str(ROOT / "bench" / "gpu" / "check"), "--dry-run", "--results", str(results)]
    proc = subprocess.run(
        [*command, "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = results.read_text().splitlines()
    assert lines[0] == "# GPU proof results"
    rows = [line for line in lines if line.startswith("- (")]
    for part in PARTS:
        assert any(row.startswith(f"- ({part}) ") for row in rows), (part, rows)
    for backend in ("jax", "torch", "tensorflow"):
        if importlib.util.find_spec(backend) is not None:
            assert any(row.startswith(f"- (a) {backend}: train ") for row in rows), backend
    assert not [row for row in rows if "FAILED" in row or "skipped" in row], rows
    study = next(row for row in rows if row.startswith("- (c)") and " study " in row)
    assert " trials finished " in study and "trials/hour" in study, study
    assert any("2 workers / 1 worker" in row for row in rows), rows
    assert "Summary:" in proc.stdout


def test_dry_run_sizes_fit_the_device_lease() -> None:
    """The GPU run's boxes fit its deadline, and the deadline fits the 8-minute device call."""
    from bench.gpu.check import DRY, Sizes, parse_args

    gpu = Sizes()
    boxes = 2 * gpu.box_train + gpu.box_features + 2 * (gpu.box_study + gpu.grace)
    assert boxes + 30 <= gpu.deadline <= 450  # 30 s for the wheel install
    assert DRY.deadline <= 240 and DRY.size == 32
    args = parse_args(["--dry-run", "--backend", "jax", "--deadline", "100"])
    assert (args.dry_run, args.backend, args.deadline) == (True, "jax", 100.0)
    with pytest.raises(SystemExit):
        parse_args(["--deadline", "0"])
    args = parse_args(["--parts", "cd", "--workers", "4"])
    assert (args.parts, args.workers) == ("cd", 4)
    for wrong in (["--parts", "ce"], ["--parts", ""], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)
