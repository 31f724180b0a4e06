"""`make bench-real DATA=DIR`: the whole user path on a real dataset folder, timed phase by
phase, and one table of what it gives on the held-out test split.

Phases (one progress line each, on stderr): `data check`; `run` (a study over the
backbones whose ImageNet weights are here: `tumor-search weights list`, each at every
feature layer they share, heads trained on cached features); the plain README path
(`export`, `train-best`, no finalize); then `finalize`, `export` and `train-best` with its
refit on train+val. Each `train-best` reads the test split once. Every phase is a whole
`tumor-search` process with a cache folder of its own (so features are computed, not
found), the weights folder as it is.

The table (stdout, Markdown) gives images per split and class, wall time per phase,
feature extraction images/s, the features finalize and the refit had to compute (none, as
features are cached per image: a cache per split recomputed every fold's and the refit's),
and for both paths test accuracy, balanced accuracy, macro F1, per-class recall and F1
with 95 % bootstrap intervals, and NLL, Brier and ECE before and after calibration. Its
last line is ``bench-real test_accuracy (CPU): 0.xxx`` (the finalize path's model).

    python bench/real.py --data /path/to/brain-tumor-mri [--trials 40] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cli, note, write_yaml  # noqa: E402
from bench.real_table import render  # noqa: E402

STUDY = "bench-real"
COMPUTED = re.compile(r"computing \S+ features for (\d+) of (\d+) images")


def space(backbones: list[str]) -> dict[str, Any]:
    """The search space: heads on cached features of every feature layer the backbones
    share (an earlier block's features need batch normalisation at the head's input)."""
    from models.registry import get_backbone

    layers = [
        layer
        for layer in get_backbone(backbones[0]).feature_layers
        if all(layer in get_backbone(b).feature_layers for b in backbones)
    ]
    return {
        "backbone": backbones,
        "feature_layer": layers,
        "feature_batchnorm": [True, False],
        "head_depth": {"low": 0, "high": 2},
        "head_width": [256, 512, 1024],
        "dropout": {"low": 0.0, "high": 0.5},
        "learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "fine_tune": [0.0],
        "batch_size": [32, 64],
        "optimizer": ["adam", "adamw"],
        "label_smoothing": [0.0, 0.1],
    }


def config(data: Path, backbones: list[str], trials: int, image_size: int) -> dict[str, Any]:
    """The study config: the pooled near-dedup split, frozen ImageNet backbones."""
    return {
        "name": STUDY,
        "trials": trials,
        "weights": "imagenet",
        "data": {
            "path": str(data),
            "split": "pooled",
            "seed": 42,
            "val_fraction": 0.15,
            "test_fraction": 0.15,
            "image_size": image_size,
            "dedup": "near",
            "near_threshold": 24,
        },
        "training": {
            "epochs": 30,
            "early_stopping_patience": 5,
            "class_weights": "balanced",
            "augmentation": "none",
            "seed": 0,
            "feature_cache": True,
            "lr_schedule": "cosine",
        },
        "space": space(backbones),
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": max(5, trials // 4)},
        "pruner": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 5},
        "objective": {"metric": "val_accuracy"},
    }


def imported_backbones() -> list[str]:
    """Backbones whose ImageNet weights the weights folder holds (`weights import`)."""
    _, result = cli("weights", "list", "--json")
    listed = json.loads(result.stdout)["backbones"]
    return [b["backbone"] for b in listed if b.get("weights")]


class Phases:
    """Runs each phase as a whole process, logging its output and wall time."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.seconds: dict[str, float] = {}
        self.logs: dict[str, str] = {}

    def __call__(self, name: str, *args: str) -> str:
        note(f"[bench-real] {name} ...")
        seconds, result = cli(*args)
        self.seconds[name] = seconds
        self.logs[name] = result.stderr
        (self.workdir / f"{name.replace(' ', '-')}.log").write_text(
            result.stdout + "\n--- stderr ---\n" + result.stderr
        )
        note(f"[bench-real] {name}: {seconds:.0f}s")
        return result.stdout

    def computed(self, name: str) -> int:
        """Images whose features the phase computed (its progress lines say)."""
        return sum(int(m.group(1)) for m in COMPUTED.finditer(self.logs.get(name, "")))


def extraction_rate(storage: str, study_name: str = STUDY) -> dict[str, float]:
    """Images/s of the trials that computed features (`feature_cache` user attribute)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    images = seconds = 0.0
    for trial in study.get_trials(deepcopy=False):
        record = trial.user_attrs.get("feature_cache") or {}
        if record.get("computed"):
            images += record["computed"]
            seconds += record["seconds"]
    return {"images": images, "seconds": seconds, "per_second": images / seconds if seconds else 0}


def run_bench(data: Path, workdir: Path, trials: int, image_size: int) -> dict[str, Any]:
    os.environ.setdefault("TUMOR_SEARCH_WEIGHTS", str(weights_dir()))
    os.environ["TUMOR_SEARCH_CACHE"] = str(workdir / "cache")
    backbones = imported_backbones()
    if not backbones:
        raise SystemExit("no ImageNet weights here: run `tumor-search weights import` first")
    note(f"[bench-real] backbones with weights: {', '.join(backbones)}")
    path = write_yaml(workdir / "real.yaml", config(data, backbones, trials, image_size))
    storage = f"sqlite:///{workdir / 'real.db'}"
    phase = Phases(workdir)
    start = time.perf_counter()
    check = json.loads(
        phase("data check", "data", "check", str(data), "--config", str(path), "--json")
    )
    # The search alone, then both ways to choose from it: the best validation trial
    # (`run --no-finalize`) and the README's default (finalize, then a refit).
    where = ("--data", str(data), "--storage", storage)
    phase("run", "run", "--config", str(path), *where, "--no-finalize")
    plain, final = workdir / "plain", workdir / "final"

    def export_and_train(label: str, export_label: str, out: Path) -> None:
        """`export`, then `train-best` on what it wrote (which reads the test split once)."""
        best = str(workdir / f"{out.name}.json")
        phase(export_label, "export", "--study", STUDY, "--storage", storage, "--out", best)
        where = ("--data", str(data), "--out", str(out), "--storage", storage)
        phase(label, "train-best", "--config", best, *where)

    export_and_train("train-best (plain)", "export (plain)", plain)  # run --no-finalize
    folds = ("--top", "3", "--folds", "3")
    phase(
        "finalize", "finalize", "--study", STUDY, "--storage", storage, "--data", str(data), *folds
    )
    export_and_train("train-best (refit)", "export", final)
    return {
        "data": str(data),
        "backbones": backbones,
        "trials": trials,
        "image_size": image_size,
        "check": check,
        "seconds": phase.seconds,
        "total_seconds": time.perf_counter() - start,
        "extraction": extraction_rate(storage),
        "computed_after_run": {
            name: phase.computed(name)
            for name in ("train-best (plain)", "finalize", "train-best (refit)")
        },
        "plain": json.loads((plain / "metrics.json").read_text()),
        "final": json.loads((final / "metrics.json").read_text()),
        "final_export": json.loads((workdir / "final.json").read_text()),
    }


def weights_dir() -> Path:
    from models.weights_store import weights_dir as folder

    return folder()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="the dataset folder (class folders); needed unless --table")
    parser.add_argument("--trials", type=int, default=40, help="the study's trials (default 40)")
    parser.add_argument("--image-size", type=int, default=224, help="input side (default 224)")
    parser.add_argument("--workdir", help="keep the study, models and logs here")
    parser.add_argument(
        "--table", metavar="RESULT.json", help="print the table of an earlier run's result"
    )
    args = parser.parse_args()
    if args.table:
        print(render(json.loads(Path(args.table).read_text())))
        return 0
    if not args.data:
        parser.error("--data DIR is needed (or --table RESULT.json)")
    data = Path(args.data).expanduser().resolve()
    if not data.is_dir():
        print(f"bench-real: no dataset folder at {data}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tumor-bench-real-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        result = run_bench(data, workdir, args.trials, args.image_size)
        (workdir / "result.json").write_text(json.dumps(result, indent=2))
        note(f"[bench-real] result: {workdir / 'result.json'}")
        print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
