"""Our side of `make bench-peer`: the README's path, under one wall-clock budget.

`tumor-search run --timeout T` (which ends with finalize, sized by `run` itself to fit in T),
then `export` and `train-best` (which refits the finalize winner on train+val), each as a
user types it. T is the budget less a reserve for export and train-best (`reserve_s`: more
when the config's `training.refit_epochs` asks for a long refit); train-best gets the rest
of the budget as its `--timeout`, so a refit trains no more epochs than fit. Neither is cut
by the bench: when they end past the budget the overrun is reported, and it counts against
us.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import ROOT, note

# export + train-best with its refit on train+val, its evaluation, calibration and files:
# measured on 2 CPU cores on the peer config (phantoms at 64 px): 1 s + 23 s.
TRAIN_BEST_RESERVE_S = 35.0
# A refit of `training.refit_epochs` epochs: 15 epochs of small_cnn on 1,600 phantoms at
# 64 px took 60-75 s on 2 CPU cores (a slower winner trains fewer: train-best --timeout).
LONG_REFIT_RESERVE_S = 60.0
# Python's start-up before train-best's clock starts (its --timeout counts from there).
START_S = 3.0


def reserve_s(config: Path) -> float:
    """Seconds kept from `run` for export and train-best (the config read as `run` reads
    it, defaults included)."""
    from search.config import load_config

    long_refit = load_config(str(config)).training.refit_epochs is not None
    return TRAIN_BEST_RESERVE_S + (LONG_REFIT_RESERVE_S if long_refit else 0.0)


@dataclass
class OurSide:
    """What our pipeline did within the budget."""

    seconds: float = 0.0
    test_accuracy: float | None = None
    trials: int = 0
    plan: str = ""
    steps: dict[str, float] = field(default_factory=dict)
    completions: list[tuple[float, float]] = field(default_factory=list)  # (seconds, value)

    def step_summary(self) -> str:
        return ", ".join(f"{name} {seconds:.0f}s" for name, seconds in self.steps.items())


def time_to_reach(completions: list[tuple[float, float]], value: float) -> float | None:
    """Seconds from the start until a completed trial first scored `value` or more."""
    times = [t for t, v in completions if v >= value - 1e-9]
    return min(times) if times else None


def step(name: str, args: list[str], log: Path, start: float) -> float:
    """Run `python -m search ARGS` with its output in `log`; its seconds.

    Raises:
        RuntimeError: the command failed.
    """
    note(f"  ours: {name} at {time.time() - start:.0f}s")
    began = time.time()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "search", *args], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    if code != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"tumor-search {name} failed (exit {code}):\n{tail}")
    return time.time() - began


def completed_trials(storage: str, study_name: str) -> list[Any]:
    import optuna

    from search.runtime.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def run_ours(config: Path, data: Path, workdir: Path, budget: float) -> OurSide:
    """`run`, `export` and `train-best` as the README gives them, within `budget` seconds."""
    if workdir.exists():  # a study left by an earlier bench would be resumed, not measured
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    side, start, launched = OurSide(), time.time(), dt.datetime.now()
    storage = f"sqlite:///{workdir / 'ours.db'}"
    common = ["--study", "ours", "--storage", storage]
    timeout = budget - reserve_s(config)
    run_log = workdir / "run.log"
    side.steps["run"] = step(
        "run",
        ["run", "--config", str(config), "--data", str(data), *common, "--timeout", f"{timeout:.1f}"],
        run_log, start,
    )  # fmt: skip
    trials = completed_trials(storage, "ours")
    if not trials:
        raise RuntimeError(f"our run completed no trial (see {run_log})")
    side.trials = len(trials)
    side.completions = [((t.datetime_complete - launched).total_seconds(), t.value) for t in trials]
    side.plan = finalize_text(storage, run_log.read_text(errors="replace"))
    best, out = workdir / "best.json", workdir / "best"
    side.steps["export"] = step(
        "export", ["export", *common, "--out", str(best)], workdir / "export.log", start
    )
    left = max(1.0, budget - (time.time() - start) - START_S)
    side.steps["train-best"] = step(
        "train-best",
        ["train-best", "--config", str(best), "--data", str(data), "--out", str(out),
         "--storage", storage, "--timeout", f"{left:.1f}"],
        workdir / "train-best.log", start,
    )  # fmt: skip
    side.seconds = time.time() - start
    side.test_accuracy = float(json.loads((out / "metrics.json").read_text())["test"]["accuracy"])
    return side


def finalize_text(storage: str, log: str) -> str:
    """What run's closing finalize did, from the study (or the log line that skipped it)."""
    import optuna

    from search.runtime.storage import open_storage

    study = optuna.load_study(study_name="ours", storage=open_storage(storage))
    final = study.user_attrs.get("finalize")
    if isinstance(final, dict):
        return f"finalize --top {final['top']} --folds {final['folds']}: trial {final['winner']}"
    skipped = [line for line in log.splitlines() if "finalize skipped" in line]
    return skipped[-1] if skipped else "no finalize"
