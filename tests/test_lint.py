"""The code stays ruff-clean: CI fails on a lint error like on a failing test."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_check_passes() -> None:
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    result = subprocess.run(
        [ruff, "check", "search", "models", "data", "common", "tests", "bench", "predictor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_imports_without_tensorflow_for_light_commands() -> None:
    """`data` commands and `--help` answer fast: they must not import TensorFlow."""
    code = (
        "import sys; import search.cli, data, search.cli.data; "
        "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_bench_scripts_do_not_shadow_the_packages() -> None:
    """`python bench/X.py` puts bench/ first on sys.path: a bench module named like one of
    the project's packages would hide it (bench/common.py once hid `common`)."""
    packages = {"search", "models", "data", "common"}
    assert not {p.stem for p in (ROOT / "bench").glob("*.py")} & packages
