"""pruning_epoch_fraction: epochs trained by a 20-trial study with median pruning divided by
the same study without pruning (same sampler seed); rss_growth: a worker's resident memory
after trial 20 divided by after trial 2 (from the unpruned study's worker)."""

from __future__ import annotations

from pathlib import Path

from bench.common import cli, note, phantoms, report, write_yaml

TRIALS = 20
EPOCHS = 8


def _study(workdir: Path, data: Path, pruner: str) -> tuple[int, float, list[float]]:
    import optuna

    config = write_yaml(
        workdir / f"pruning-{pruner}.yaml",
        {
            "name": f"bench-{pruner}",
            "trials": TRIALS,
            "weights": "none",
            "data": {
                "path": str(data),
                "split": "official",
                "seed": 0,
                "val_fraction": 0.2,
                "image_size": 48,
            },
            "training": {"epochs": EPOCHS, "early_stopping_patience": 0, "seed": 0},
            "space": {
                "backbone": ["small_cnn"],
                "fine_tune": [1.0],
                "head_depth": {"low": 0, "high": 2},
                "head_width": [32, 64, 128],
                "dropout": {"low": 0.0, "high": 0.5},
                "learning_rate": {"low": 1.0e-5, "high": 3.0e-2, "log": True},
                "batch_size": [32],
            },
            "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 6},
            "pruner": {"name": pruner, "n_startup_trials": 4, "n_warmup_steps": 1},
        },
    )
    storage = f"sqlite:///{workdir / f'pruning-{pruner}.db'}"
    cli(
        "study",
        "create",
        "--study",
        "p",
        "--config",
        str(config),
        "--data",
        str(data),
        "--storage",
        storage,
    )
    seconds, _ = cli("worker", "--study", "p", "--storage", storage, "--data", str(data), "--quiet")
    study = optuna.load_study(study_name="p", storage=storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    epochs = sum(len(t.intermediate_values) for t in trials)
    rss = [t.user_attrs.get("rss_mb", float("nan")) for t in trials]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    note(
        f"pruner {pruner}: {epochs} epochs, {pruned} pruned, best {study.best_value:.4f}, {seconds:.0f}s"
    )
    return epochs, study.best_value, rss


def run(workdir: Path) -> tuple[float, float]:
    data = phantoms(workdir, per_class=120, size=48)
    pruned_epochs, pruned_best, _ = _study(workdir, data, "median")
    full_epochs, full_best, rss = _study(workdir, data, "none")
    fraction = pruned_epochs / full_epochs
    report(
        "pruning_epoch_fraction",
        fraction,
        best_pruned=f"{pruned_best:.4f}",
        best_unpruned=f"{full_best:.4f}",
        best_difference=f"{abs(pruned_best - full_best):.4f}",
        target="<= 0.6, best within 0.02",
    )
    growth = rss[-1] / rss[1]
    report(
        "rss_growth",
        growth,
        rss_trial2_mb=f"{rss[1]:.0f}",
        rss_trial20_mb=f"{rss[-1]:.0f}",
        target="<= 1.10",
    )
    return fraction, growth
