"""Compile time and steady-state epoch time of one trial's fit on each installed backend.

    .venv/bin/python bench/backends.py [--per-class 60] [--size 64] [--epochs 4]

For small_cnn and mobilenet_v3_small (from scratch, batch 32), each backend in its own
process: the first epoch's excess over the median later epoch (`compile_s`: compiling, or on
TensorFlow tracing, the steps) and the median later epoch (`epoch_s`). JAX's on-disk
compilation cache is pointed at a fresh folder, so its compile time is a first run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from models.backend import installed_backends

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = ("small_cnn", "mobilenet_v3_small")

_ONE = """
import json, sys
from data.synth import synthesize
from models.backend import backend_name
from models.trial_config import TrialConfig
from search.config import load_config
from search.study_data import load_train_val, prepare
from search.training.callbacks import EpochRecorder
from search.training.fit import fit

config_file, data_dir, backbone = sys.argv[1], sys.argv[2], sys.argv[3]
config = load_config(config_file)
train_val = load_train_val(prepare(config, data_dir), config.data.image_size)
epochs = config.training.epochs
recorder = EpochRecorder(f"[{backend_name()} {backbone}]", epochs)
trial = TrialConfig(backbone, head_depth=1, head_width=64, fine_tune=1.0, batch_size=32)
fit(trial, config, train_val, recorder, need_model=False)
print("RESULT " + json.dumps({"compile_s": recorder.compile_seconds,
    "epoch_s": sorted(recorder.epoch_seconds[1:])[len(recorder.epoch_seconds[1:]) // 2]}))
"""


def write_config(path: Path, size: int, epochs: int) -> Path:
    """The demo config at `size` px for `epochs` epochs, without early stopping."""
    import yaml

    config = yaml.safe_load((ROOT / "search" / "configs" / "demo.yaml").read_text())
    config["data"]["image_size"] = size
    config["training"].update({"epochs": epochs, "early_stopping_patience": 0})
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from data.synth import synthesize

        synthesize(Path(tmp) / "data", per_class=args.per_class, size=args.size, seed=0)
        config = write_config(Path(tmp) / "c.yaml", args.size, args.epochs)
        print(f"{'backend':<11} {'backbone':<20} {'compile_s':>9} {'epoch_s':>8}")
        for backend in installed_backends():
            for backbone in BACKBONES:
                env = {**os.environ, "KERAS_BACKEND": backend, "TUMOR_SEARCH_CACHE": tmp}
                env["JAX_COMPILATION_CACHE_DIR"] = str(Path(tmp) / f"jax-{backbone}")
                argv = [str(config), str(Path(tmp) / "data"), backbone]
                done = subprocess.run(
                    [sys.executable, "-c", _ONE, *argv],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not lines:
                    print(f"{backend:<11} {backbone:<20} failed: {done.stderr.strip()[-300:]}")
                    continue
                r = json.loads(lines[-1][7:])
                print(f"{backend:<11} {backbone:<20} {r['compile_s']:>9.1f} {r['epoch_s']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
