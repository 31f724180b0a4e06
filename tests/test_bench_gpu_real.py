"""`bench/gpu/real`: what it packs for the GPU machine, and its whole run at tiny sizes here
(phantoms, small_cnn with weights made here, 32 px), so that the script cannot rot between
loans of a GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bench.gpu.real_pack import quantize, read_packed
from tests.conftest import ROOT


def test_int8_kernels_keep_each_output_channel_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    for shape in ((3, 3, 8, 16), (3, 3, 8, 1), (1, 1, 8, 16), (8, 4)):
        kernel = rng.normal(size=shape).astype(np.float32) * rng.uniform(0.01, 3, shape[-1])
        values, scales = quantize(kernel)
        assert values.dtype == np.int8 and np.abs(values).max() == 127
        assert np.all(np.abs(values * scales - kernel) <= scales / 2 + 1e-7)
        channel = len(shape) - 2 if shape[-1] == 1 and len(shape) > 2 else len(shape) - 1
        assert scales.shape[channel] == shape[channel] and scales.size == shape[channel]


def _weights(tmp_path: Path) -> dict[str, str]:
    """small_cnn weights made here, imported into a weights folder of the test's own."""
    from models.registry import get_backbone

    env = {**os.environ, "TUMOR_SEARCH_WEIGHTS": str(tmp_path / "weights")}
    source = tmp_path / "small_cnn.weights.h5"
    get_backbone("small_cnn").factory(32, None).save_weights(str(source))
    command = [sys.executable, "-m", "search", "weights", "import", str(source)]
    proc = subprocess.run([*command, "--backbone", "small_cnn"], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return env


def _pack(tmp_path: Path, env: dict[str, str]) -> Path:
    from data.synth import synthesize

    data = tmp_path / "data"
    synthesize(data, per_class=14, size=48, seed=5)
    command = [sys.executable, "-m", "bench.gpu.real", "pack", "--data", str(data)]
    command += ["--out", str(tmp_path / "pack"), "--backbone", "small_cnn", "--cut", "block3"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "pack"


@pytest.mark.slow  # about 2 minutes on 2 CPU cores
@pytest.mark.timeout(600)
def test_pack_then_dry_run_writes_every_phase(tmp_path: Path) -> None:
    env = _weights(tmp_path)
    pack = _pack(tmp_path, env)
    meta, variables = read_packed(pack / "small_cnn-block3.int8.npz")
    assert meta["backbone"] == "small_cnn" and meta["feature_layer"] == "block3"
    assert not any(name.startswith("block4") for name in variables)  # above the cut: left out
    out = tmp_path / "out"
    command = [str(ROOT / "bench" / "gpu" / "real"), "run", "--dry-run", "--pack", str(pack)]
    command += ["--out", str(out), "--backbone", "small_cnn", "--layers", "block3"]
    command += ["--image-size", "32", "--frozen-box", "40", "--tune-box", "30"]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = [r for r in (out / "RESULTS.md").read_text().splitlines() if r.startswith("- (")]
    assert [row[:5] for row in rows] == ["- (w)", "- (f)", "- (t)", "- (b)"], rows
    assert "test accuracy" in rows[-1] and "test read once" in rows[-1]
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {"gpu-real-frozen.log", "gpu-real-tune.log", "train-best.log"} <= set(tar.getnames())
