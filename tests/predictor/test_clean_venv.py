"""`pip install ./predictor` into a clean virtual environment gives a working
`tumor-predict` without TensorFlow, Keras or Optuna: what a deployment box gets.

It installs from the package index (pip's cache makes it fast). With no index reachable the
test fails, unless TUMOR_SEARCH_OFFLINE=1 says this machine is offline on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.predictor.blocked import BLOCKED
from tests.predictor.onnx_models import write_model
from tests.predictor.test_predict import _rgb_image, run_predictor

OFFLINE = "TUMOR_SEARCH_OFFLINE"


@pytest.mark.slow
def test_predictor_installs_and_runs_without_tensorflow(tmp_path: Path) -> None:
    if os.environ.get(OFFLINE) == "1":
        pytest.skip(f"{OFFLINE}=1: no package index to install the predictor's dependencies")
    source = tmp_path / "predictor"  # a copy: building must not leave build/ in the checkout
    shutil.copytree(ROOT / "predictor", source, ignore=shutil.ignore_patterns("*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, f"pip install ./predictor failed: {pip.stderr[-2000:]}"
    python = str(venv / "bin" / "python")
    for name in BLOCKED:
        probe = subprocess.run(
            [python, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, timeout=60
        )
        assert probe.returncode != 0, f"{name} is installed in the predictor's venv"
    model = write_model(tmp_path / "model.onnx")
    image = str(_rgb_image(tmp_path / "img.png", 5))
    installed = subprocess.run(
        [str(venv / "bin" / "tumor-predict"), "--model", str(model), image],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == run_predictor("--model", str(model), image).stdout
    assert installed.stdout.startswith(f"{image}\t")
