"""Trials per minute with 1 and 2 workers sharing one storage (a short objective).

    python bench/throughput.py --storage postgresql+psycopg2://postgres@127.0.0.1:5432/test

Each run creates its own study of N trials (small_cnn, 1 epoch, 32 px), starts the workers
at the same moment, waits for them and prints `trials_per_minute_W_workers: value` from
the first trial's start to the last trial's end (and, beside it, the figure with process
start-up included). The studies are deleted afterwards. Not part of `make bench`: it needs
a database server to mean anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, cli, note, phantoms, report, write_yaml  # noqa: E402


def _config(name: str, trials: int, data: Path) -> dict:
    return {
        "name": name,
        "trials": trials,
        "weights": "none",
        "data": {"path": str(data), "split": "official", "seed": 1, "image_size": 32},
        "training": {"epochs": 1, "early_stopping_patience": 1, "seed": 0},
        "space": {
            "backbone": ["small_cnn"],
            "head_depth": {"low": 0, "high": 1},
            "head_width": [16],
            "dropout": {"low": 0.0, "high": 0.3},
            "learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
            "fine_tune": [1.0],
            "batch_size": [32],
        },
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "none"},
    }


def measure(storage: str, workers: int, trials: int, workdir: Path, data: Path) -> None:
    import optuna

    name = f"throughput-{workers}-{uuid.uuid4().hex[:8]}"
    config = write_yaml(workdir / f"{name}.yaml", _config(name, trials, data))
    cli("study", "create", "--study", name, "--config", str(config), "--storage", storage)
    try:
        command = [sys.executable, "-m", "search", "worker", "--study", name]
        command += ["--storage", storage, "--quiet"]
        start = time.perf_counter()
        procs = [subprocess.Popen(command, cwd=ROOT) for _ in range(workers)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - start
        if any(codes):
            raise RuntimeError(f"worker exit codes {codes}")
        done = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        finished = [t for t in done if t.state.is_finished()]
        first = min(t.datetime_start for t in finished)
        last = max(t.datetime_complete for t in finished)
        busy = (last - first).total_seconds()
        report(
            f"trials_per_minute_{workers}_worker{'s' if workers > 1 else ''}",
            60.0 * len(finished) / busy,
            trials=len(finished),
            including_start_up=f"{60.0 * len(finished) / wall:.1f}",
        )
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="storage URL the workers share")
    parser.add_argument("--trials", type=int, default=24, help="trials per study (default 24)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tumor-throughput-") as tmp:
        workdir = Path(tmp)
        os.environ["TUMOR_SEARCH_CACHE"] = str(workdir / "cache")
        data = phantoms(workdir, per_class=40, size=32)
        for workers in (1, 2):
            note(f"{workers} worker(s), {args.trials} trials ...")
            measure(args.storage, workers, args.trials, workdir, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
