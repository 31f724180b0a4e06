"""service_overhead: one trial run by `tumor-search worker` divided by a bare `model.fit`
of the same model on the same cached arrays, both timed as whole processes and both with
the TensorFlow settings of `models.backend` (Grappler off on a CPU).

A worker process pays about 1 s that a bare fit does not (profiled on 2026-11-26): opening
the storage with SQLAlchemy and Alembic (about 0.6 s), the pruning callback's report and
should-prune queries (about 9 ms per epoch), claiming and telling the trial, and
`clear_session` after it (0.2 s). It saves about 1 s at exit that a plain script pays: it
freezes its long-lived objects before training (`gc.freeze`), so the interpreter's final
collection skips TensorFlow's objects. Before that change the figure was 0.96-1.09 in five
runs (1.32 once, on a busy spell); the trial is long enough (28 epochs, 20-60 s here; real
trials take minutes) that the rest is a few per cent.

The figure is the median over rounds of worker/bare, each round's two runs back to back (in
alternating order): a busy spell of this shared machine then slows both sides of a ratio
rather than one side of the medians."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.harness import ROOT, cli, note, phantoms, report, timed, write_yaml

EPOCHS = 28
ROUNDS = 5


def run(workdir: Path) -> float:
    data = phantoms(workdir, per_class=150, size=64)
    config = write_yaml(
        workdir / "overhead.yaml",
        {
            "name": "bench-overhead",
            "trials": 1,
            "weights": "none",
            "data": {
                "path": str(data),
                "split": "official",
                "seed": 0,
                "val_fraction": 0.15,
                "image_size": 64,
            },
            "training": {"epochs": EPOCHS, "early_stopping_patience": 0, "seed": 0},
            "space": {
                "backbone": ["small_cnn"],
                "fine_tune": [1.0],
                "head_depth": [1],
                "head_width": [128],
                "dropout": [0.2],
                "learning_rate": [1e-3],
                "batch_size": [32],
            },
            "heartbeat": {"interval": 20, "grace_period": 120},
        },
    )
    storage_of = {}

    def worker_run(round_: int) -> float:
        db = workdir / f"overhead-{round_}.db"
        db.unlink(missing_ok=True)
        storage_of[round_] = f"sqlite:///{db}"
        cli(
            "study",
            "create",
            "--study",
            "overhead",
            "--config",
            str(config),
            "--data",
            str(data),
            "--storage",
            storage_of[round_],
        )
        seconds, _ = cli(
            "worker",
            "--study",
            "overhead",
            "--storage",
            storage_of[round_],
            "--data",
            str(data),
            "--quiet",
        )
        return seconds

    def bare_run() -> float:
        seconds, _ = timed(
            [
                sys.executable,
                str(ROOT / "bench" / "bare_fit.py"),
                "--config",
                str(config),
                "--data",
                str(data),
            ]
        )
        return seconds

    worker_times: list[float] = []
    bare_times: list[float] = []
    # A B, B A, A B, ...: the machine's slow spells fall on both sides alike.
    for round_ in range(ROUNDS):
        if round_ % 2 == 0:
            worker_times.append(worker_run(round_))
            bare_times.append(bare_run())
        else:
            bare_times.append(bare_run())
            worker_times.append(worker_run(round_))
        note(
            f"service overhead round {round_ + 1}: worker {worker_times[-1]:.1f}s, bare fit {bare_times[-1]:.1f}s"
        )
    worker, bare = statistics.median(worker_times), statistics.median(bare_times)
    ratios = [w / b for w, b in zip(worker_times, bare_times, strict=True)]
    ratio = statistics.median(ratios)
    report(
        "service_overhead",
        ratio,
        round_ratios="/".join(f"{r:.3f}" for r in ratios),
        worker_median_s=f"{worker:.1f}",
        bare_fit_median_s=f"{bare:.1f}",
        ratio_of_medians=f"{worker / bare:.3f}",
        epochs=EPOCHS,
        rounds=ROUNDS,
        target="<= 1.05",
    )
    return ratio
