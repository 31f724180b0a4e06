"""Our side of `make bench-peer`: the real command line, under one wall-clock budget.

`tumor-search run` searches until `RunDeadline` stops it between trials: past
`run_fraction` of the budget when finalize still fits after it, else while trials still fit
before the time export and train-best need (its own --timeout is only a backstop).
`finalize` gets --top and --folds sized from the trials' durations to fit what is left, and
is stopped at its deadline (export then falls back to the best validation trial); `export`
and `train-best` are never cut: when they end past the budget the overrun is reported, and
it counts against us.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import ROOT, note

# Measured on 2 busy CPU cores at 64 px: train-best's process, data, evaluation, calibration
# and files around its fit; finalize's process and data; export.
TRAIN_BEST_SECONDS, FINALIZE_SECONDS, EXPORT_SECONDS = 24.0, 15.0, 3.0
FIRST_TRIAL_SHARE = 0.75  # no completed trial by then: stop, the bench fails
DONE_MARK = "trials done"  # the run log's line after each finished trial
POLL_SECONDS = 1.0
MAX_TOP, FOLDS = 5, 3


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


def step(
    name: str,
    args: list[str],
    log: Path,
    start: float,
    deadline: Callable[[], float] | None = None,
) -> tuple[float, bool]:
    """Run `python -m search ARGS` with its output in `log`; SIGTERM it once the wall clock
    passes `deadline()` (a time.time(), asked again every second). Returns (seconds, whether
    it was stopped).

    Raises:
        RuntimeError: the command failed on its own.
    """
    note(f"  ours: {name} at {time.time() - start:.0f}s")
    began, stopped = time.time(), False
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "search", *args], cwd=ROOT, env=env, stdout=out, stderr=out
        )
        while process.poll() is None:
            if deadline is not None and time.time() >= deadline():
                stopped = True
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                break
            time.sleep(POLL_SECONDS)
    if process.returncode != 0 and not stopped:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"tumor-search {name} failed (exit {process.returncode}):\n{tail}")
    return time.time() - began, stopped


def completed_trials(storage: str, study_name: str) -> list[Any]:
    import optuna

    from search.runtime.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def train_best_reserve(trial_seconds: float, val_fraction: float) -> float:
    """Seconds to keep for export and train-best: its process, evaluation and files, and a
    refit on train+val (a trial's fit on 1 / (1 - val_fraction) times the images)."""
    return EXPORT_SECONDS + TRAIN_BEST_SECONDS + trial_seconds / (1.0 - val_fraction)


def fold_seconds(trial_seconds: float, folds: int, val_fraction: float) -> float:
    """One fold's fit: (K-1)/K of train+val, where a trial fitted the train split alone."""
    return trial_seconds * (folds - 1) / folds / (1.0 - val_fraction)


def finalize_plan(
    seconds: float, ranked: list[float], val_fraction: float
) -> tuple[int, int, float] | None:
    """(top, folds, finalize's seconds): the most finalists (then folds) whose fits, plus
    export and train-best of the slowest finalist, end within `seconds`; None if none do.

    Args:
        seconds: What is left of the budget.
        ranked: The completed trials' durations, best trial first.
        val_fraction: The config's validation share (folds and the refit train on more).
    """
    for top in range(min(MAX_TOP, len(ranked)), 0, -1):  # more finalists before more folds
        for folds in (FOLDS, 2):
            finalists = ranked[:top]
            fits = sum(folds * fold_seconds(d, folds, val_fraction) for d in finalists)
            allowed = seconds - train_best_reserve(max(finalists), val_fraction)
            if FINALIZE_SECONDS + fits <= allowed:
                return top, folds, allowed
    return None


class RunDeadline:
    """When to stop `run` (SIGTERM ends the trial it is in), decided each time the run log
    reports a finished trial, from the completed trials' durations: now, when finalize
    fits now and would not after one more trial (or `run_fraction` of the budget is past);
    else when only what export and train-best of the best trial need is left."""

    def __init__(
        self, storage: str, study: str, log: Path, budget: float, run_fraction: float,
        val_fraction: float, start: float,
    ) -> None:  # fmt: skip
        self.storage, self.study, self.log = storage, study, log
        self.start, self.budget, self.run_fraction = start, budget, run_fraction
        self.val_fraction = val_fraction
        self.value = start + FIRST_TRIAL_SHARE * budget  # no completed trial by then: fail
        self.reports = 0

    def __call__(self) -> float:
        reports = self.log.read_text(errors="replace").count(DONE_MARK)
        if reports != self.reports:
            self.reports = reports
            trials = sorted(completed_trials(self.storage, self.study), key=lambda t: -t.value)
            if trials:
                self.value = self.decide(time.time(), [t.duration.total_seconds() for t in trials])
        return self.value

    def decide(self, now: float, ranked: list[float]) -> float:
        """The time to stop at, just after a trial finished at `now` (`ranked`: durations,
        best trial first)."""
        left = self.start + self.budget - now
        next_trial = sum(ranked) / len(ranked)
        past_share = now - self.start >= self.run_fraction * self.budget
        fits_now = finalize_plan(left, ranked, self.val_fraction) is not None
        fits_later = finalize_plan(left - next_trial, ranked, self.val_fraction) is not None
        if fits_now and (past_share or not fits_later):
            return now
        return self.start + self.budget - train_best_reserve(ranked[0], self.val_fraction)


def _search(
    side: OurSide, common: list[str], config: Path, data: Path, workdir: Path,
    budget: float, run_fraction: float, val_fraction: float,
) -> list[Any]:  # fmt: skip
    """`run` for its share of the budget; the completed trials, best first."""
    start, launched = time.time(), dt.datetime.now()
    storage, study, log = common[3], common[1], workdir / "run.log"
    deadline = RunDeadline(storage, study, log, budget, run_fraction, val_fraction, start)
    # run's own --timeout is only a backstop: the deadline ends it between trials.
    timeout = budget - EXPORT_SECONDS - TRAIN_BEST_SECONDS
    seconds, stopped = step(
        "run",
        ["run", "--config", str(config), "--data", str(data), *common,
         "--timeout", f"{timeout:.1f}"],
        log, start, deadline,
    )  # fmt: skip
    side.steps["run"] = seconds
    trials = completed_trials(storage, study)
    if not trials:
        raise RuntimeError(f"our run completed no trial in {seconds:.0f}s (see {log})")
    side.trials = len(trials)
    side.completions = [((t.datetime_complete - launched).total_seconds(), t.value) for t in trials]
    side.plan = "" if stopped else "run ended by its --timeout; "
    return sorted(trials, key=lambda t: t.value, reverse=True)


def run_ours(
    config: Path, data: Path, workdir: Path, budget: float, run_fraction: float,
    val_fraction: float,
) -> OurSide:  # fmt: skip
    """Search, finalize, export and test our best model within `budget` seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    side, start = OurSide(), time.time()
    storage = f"sqlite:///{workdir / 'ours.db'}"
    common = ["--study", "ours", "--storage", storage]
    ranked = _search(side, common, config, data, workdir, budget, run_fraction, val_fraction)
    durations = [t.duration.total_seconds() for t in ranked]
    plan = finalize_plan(start + budget - time.time(), durations, val_fraction)
    if plan is None:
        side.plan += "finalize skipped (no time left for it)"
    else:
        top, folds, seconds = plan
        end = time.time() + seconds
        side.steps["finalize"], stopped = step(
            "finalize",
            ["finalize", *common, "--data", str(data), "--top", str(top), "--folds", str(folds)],
            workdir / "finalize.log", start, lambda: end,
        )  # fmt: skip
        side.plan += f"finalize --top {top} --folds {folds}" + (
            " stopped at its deadline (export used the best validation trial)" if stopped else ""
        )
    best, out = workdir / "best.json", workdir / "best"
    side.steps["export"], _ = step(
        "export", ["export", *common, "--out", str(best)], workdir / "export.log", start
    )
    side.steps["train-best"], _ = step(
        "train-best",
        ["train-best", "--config", str(best), "--data", str(data), "--out", str(out),
         "--storage", storage],
        workdir / "train-best.log", start,
    )  # fmt: skip
    side.seconds = time.time() - start
    side.test_accuracy = float(json.loads((out / "metrics.json").read_text())["test"]["accuracy"])
    return side
