"""torch_compile: `torch.compile` against eager PyTorch on the same trials (issue 31, item 2).

On PyTorch, `training.xla: on` compiles the train, test and predict steps with
`torch.compile` (Keras's `jit_compile=True`); `off` runs them eagerly; `auto`, the default,
is eager. This bench runs the same enqueued trials twice under `KERAS_BACKEND=torch`, once
each way, one worker process per side (eager first), and prints side by side:

    torch_compile_wall_ratio: <compiled trials' wall / eager trials' wall>

then per side: each trial's wall, first-epoch excess (compile) and steady epoch seconds. Below 1.0 torch.compile pays on this machine and these trials; the
first trial of a shape pays the whole compile, later trials of that shape pay a recompile
or a cache hit. On 2 CPU cores run it with the defaults (32 px phantoms, small_cnn and
mobilenet_v3_small); on a GPU: `--size 224 --per-class 400 --epochs 6`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from bench.harness import ROOT, cli, note, phantoms, report, write_yaml  # noqa: E402

STUDY = "bench-torch-compile"
# The same trials on both sides: two shapes, each trained twice with other rates, so that the
# second trial of a shape shows what a compiled step costs once its shape has been seen.
TRIALS: tuple[dict[str, Any], ...] = (
    {"backbone": "small_cnn", "head_depth": 1, "head_width": 64, "dropout": 0.1,
     "learning_rate": 2e-3},
    {"backbone": "small_cnn", "head_depth": 1, "head_width": 64, "dropout": 0.3,
     "learning_rate": 1e-3},
    {"backbone": "mobilenet_v3_small", "head_depth": 1, "head_width": 64, "dropout": 0.1,
     "learning_rate": 2e-3},
    {"backbone": "mobilenet_v3_small", "head_depth": 1, "head_width": 64, "dropout": 0.3,
     "learning_rate": 1e-3},
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="phantom side in pixels (32)")
    parser.add_argument("--per-class", type=int, default=60, help="phantoms per class (60)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (4)")
    parser.add_argument("--workdir", help="keep data and studies here (default: temporary)")
    args = parser.parse_args(argv)
    if min(args.size, args.per_class, args.epochs) < 1 or args.epochs < 2:
        parser.error("--size and --per-class >= 1, --epochs >= 2 please")
    return args


def _config(workdir: Path, data: Path, args: argparse.Namespace, xla: str) -> Path:
    config = yaml.safe_load((ROOT / "search" / "configs" / "demo.yaml").read_text())
    config["name"] = STUDY
    config["trials"] = len(TRIALS)
    config["data"]["path"] = str(data)
    config["data"]["image_size"] = args.size
    config["training"].update(epochs=args.epochs, early_stopping_patience=args.epochs, xla=xla)
    config["pruner"] = {"name": "none"}
    return write_yaml(workdir / f"torch-{xla}.yaml", config)


def run_side(workdir: Path, data: Path, args: argparse.Namespace, xla: str) -> list[Any]:
    """The enqueued trials run by one `tumor-search run` under PyTorch; its trials."""
    import optuna

    config = _config(workdir, data, args, xla)
    storage = f"sqlite:///{workdir / f'torch-{xla}.db'}"
    env = {"KERAS_BACKEND": "torch", "TUMOR_SEARCH_CACHE": str(workdir / f"cache-{xla}")}
    common = ["--study", STUDY, "--storage", storage]
    cli("study", "create", "--config", str(config), "--data", str(data), *common, env=env)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    for params in TRIALS:
        study.enqueue_trial(params)
    seconds, _ = cli("worker", *common, "--data", str(data), env=env)
    note(f"  xla {xla}: {len(TRIALS)} trials in {seconds:.0f}s")
    trials = sorted(optuna.load_study(study_name=STUDY, storage=storage).trials,
                    key=lambda t: t.number)  # fmt: skip
    states = {t.state.name for t in trials}
    if states != {"COMPLETE"}:
        raise RuntimeError(f"xla {xla}: trials ended {sorted(states)}, not all COMPLETE")
    return trials


def _row(trial: Any) -> dict[str, float]:
    attrs = trial.user_attrs
    history = attrs["history"]
    epochs = len(history["loss"])
    wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
    compile_s = float(attrs.get("compile_seconds", 0.0))
    steady = (float(attrs["seconds_per_epoch"]) * epochs - compile_s) / epochs
    return {"wall": wall, "compile": compile_s, "steady": steady}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tumor-bench-torch-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        data = phantoms(workdir, args.per_class, args.size)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sides: dict[str, list[Any]] = {}
        for xla in ("off", "on"):
            sides[xla] = run_side(workdir, data, args, xla)
        rows = {xla: [_row(t) for t in trials] for xla, trials in sides.items()}
        walls = {xla: sum(r["wall"] for r in side) for xla, side in rows.items()}
        report(
            "torch_compile_wall_ratio",
            walls["on"] / walls["off"],
            compiled_s=f"{walls['on']:.1f}",
            eager_s=f"{walls['off']:.1f}",
            trials=len(TRIALS),
            size=args.size,
            epochs=args.epochs,
        )
        for xla, side in rows.items():
            name = "torch.compile" if xla == "on" else "eager"
            for params, row in zip(TRIALS, side, strict=True):
                report(
                    f"torch_compile.{name}",
                    f"{params['backbone']} lr {params['learning_rate']:g}",
                    wall_s=f"{row['wall']:.1f}",
                    compile_s=f"{row['compile']:.1f}",
                    steady_epoch_s=f"{row['steady']:.2f}",
                )
            report(
                f"torch_compile.{name}.median_steady_epoch_s",
                statistics.median(r["steady"] for r in side),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
