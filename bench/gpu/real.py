"""The GPU bench on real MRI: `bench/gpu/real` (this module is what it runs).

    python -m bench.gpu.real pack --data /data/brain-mri --out .gpu-real    # here
    bash bench/gpu/real run --pack .gpu-real --out $OUT                     # on the GPU machine
    bench/gpu/real run --dry-run --pack .gpu-real-tiny                      # here, on CPU

`run` walks the service's path on the packed dataset (`bench.gpu.real_pack`), one
`tumor-search` process per phase, each phase in its own time box, each phase's line
appended to ``RESULTS.md`` under ``--out`` as soon as it ends:

- (w) the packed images extracted, the packed weights unpacked into a Keras weights file and `weights import`-ed;
- (f) a **frozen search**: `run --workers W` of 100 trials, heads on cached features of
  the feature layers below the packed cut (the pooled split with near copies kept
  together, drawn here from the packed pixels), GPU utilisation sampled each second;
- (t) a **fine-tuning search**: about 5 trials with the top blocks below the cut unfrozen,
  one shape for all (so that later trials reuse the first's compiled steps);
- (b) `export` and `train-best --no-refit` of its best trial: the test split read once.

Each line gives wall time, trials, images/s, compile seconds and utilisation. The logs of
every phase are left in ``--out`` as one ``logs.tar.gz``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.gpu.proc import Boxed, GpuSampler, run_boxed  # noqa: E402
from bench.gpu.real_pack import (  # noqa: E402
    WEIGHTS_FILE,
    pack_images,
    pack_weights,
    unpack_images,
    unpack_weights,
)
from bench.gpu.report import Report, device_name  # noqa: E402
from bench.gpu.study import (  # noqa: E402
    compile_attrs_text,
    compile_text,
    epoch_seconds,
    finished_text,
    trial_counts,
)


@dataclass(frozen=True)
class Plan:
    """What each phase runs and how long it may take (seconds)."""

    backbone: str = "xception"
    layers: tuple[str, ...] = ("block13", "middle")  # at or below the packed cut
    image_size: int = 224
    frozen_trials: int = 100
    frozen_workers: int = 12
    frozen_box: float = 240.0
    tune_trials: int = 5
    tune_workers: int = 3
    tune_box: float = 200.0
    tune_epochs: int = 8
    tune_fraction: float = 0.35  # of the cut backbone's layers, from the top
    frozen_grace: float = 20.0  # a trial in flight when the box ends: heads train in seconds
    tune_grace: float = 60.0
    best_reserve: float = 120.0  # train-best: a compiled step found in the cache, 8 epochs
    deadline: float = 570.0


# Plan fields that `run` takes as options (--tune-trials 3, ...).
def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


OPTIONS = {
    "backbone": str,
    "layers": _names,
    "image_size": int,
    "deadline": float,
    "frozen_box": float,
    "frozen_workers": int,
    "tune_trials": int,
    "tune_workers": int,
    "tune_box": float,
    "tune_epochs": int,
    "tune_grace": float,
    "best_reserve": float,
}

DRY = Plan(
    image_size=71,
    frozen_trials=6,
    frozen_workers=2,
    frozen_box=120.0,
    tune_trials=2,
    tune_workers=1,
    tune_box=60.0,
    tune_epochs=2,
    frozen_grace=60.0,
    tune_grace=60.0,
    best_reserve=60.0,
    deadline=600.0,
)


@dataclass
class Run:
    """One run: where it works, its environment, its results file, its clock."""

    plan: Plan
    pack: Path
    workdir: Path
    out: Path
    env: dict[str, str]
    report: Report
    dry: bool
    started: float = field(default_factory=time.time)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        """The dataset folder, extracted from the pack's images.zip."""
        return self.workdir / "data"

    def left(self) -> float:
        return self.started + self.plan.deadline - time.time()

    def cli(self, name: str, *args: str, box: float) -> Boxed:
        """`python -m search ARGS` in a box of `box` seconds, its output in NAME.log."""
        command = [sys.executable, "-m", "search", *args]
        return run_boxed(command, self.env, max(box, 1.0), self.workdir / f"{name}.log", cwd=ROOT)

    def box(self, want: float, reserve: float) -> float:
        """`want` seconds, or what is left when `reserve` seconds are kept for later phases."""
        return max(min(want, self.left() - reserve), 1.0)


def base_config(data: Path, plan: Plan, name: str, trials: int) -> dict[str, Any]:
    """bench/real's study config (the pooled near-dedup split, frozen ImageNet backbones),
    with the GPU plan's backbone, feature layers, size and budget."""
    from bench.real import config

    out = config(data, [plan.backbone], trials, plan.image_size)
    out["name"] = name
    out["space"]["feature_layer"] = list(plan.layers)
    out["sampler"]["n_startup_trials"] = max(3, trials // 4)
    return out


def tune_config(data: Path, plan: Plan) -> dict[str, Any]:
    """Fine-tuning: the top blocks below the cut train, with flips and small shifts; every
    trial has one shape (head, batch, label smoothing fixed) and differs in learning rate
    and dropout, which are variables of the compiled step."""
    out = base_config(data, plan, "gpu-real-tune", plan.tune_trials)
    out["training"].update(
        epochs=plan.tune_epochs,
        early_stopping_patience=3,
        augmentation={"flip": True, "rotation": 0.03, "zoom": 0.05},
    )
    out["space"].update(
        feature_layer=[plan.layers[0]],
        feature_batchnorm=[True],
        head_depth={"low": 0, "high": 0},
        dropout={"low": 0.0, "high": 0.4},
        learning_rate={"low": 3.0e-5, "high": 3.0e-4, "log": True},
        fine_tune=[plan.tune_fraction],
        batch_size=[32],
        optimizer=["adam"],
        label_smoothing=[0.1],
    )
    out["space"].pop("head_width", None)
    out["pruner"] = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 2}
    return out


def write_config(path: Path, payload: dict[str, Any]) -> Path:
    from bench.harness import write_yaml

    return write_yaml(path, payload)


def weights_phase(run: Run) -> bool:
    """(w): the packed images extracted; the packed weights as a Keras weights file,
    imported into the weights folder."""
    start = time.perf_counter()
    unpack_images(run.pack, run.data)
    images = sum(1 for p in run.data.rglob("*.webp"))
    extracted = time.perf_counter() - start
    packed = sorted(run.pack.glob(WEIGHTS_FILE.format(backbone=run.plan.backbone, layer="*")))
    if not packed:
        run.report.line("w", "jax", f"no packed weights in {run.pack}", failed=True)
        return False
    target = run.workdir / f"{run.plan.backbone}.weights.h5"
    meta = unpack_weights(packed[0], target)
    boxed = run.cli(
        "weights",
        "weights",
        "import",
        str(target),
        "--backbone",
        meta["backbone"],
        box=run.box(120, 0),
    )
    ok = boxed.returncode == 0
    run.report.line(
        "w",
        "jax",
        f"{images} images extracted in {extracted:.1f} s; "
        f"{meta['variables']} variables of {meta['backbone']} below {meta['feature_layer']} "
        f"(int8 kernels) unpacked and imported in {time.perf_counter() - start:.1f} s"
        + ("" if ok else f"; import failed: {boxed.tail()}"),
        failed=not ok,
    )
    return ok


def study_phase(
    run: Run, name: str, config: dict[str, Any], workers: int, box: float, grace: float
) -> dict[str, Any]:
    """One `run --workers N` of a study in a box; its counts and its line's text."""
    path = write_config(run.workdir / f"{name}.yaml", config)
    url = f"sqlite:///{run.workdir / f'{name}.db'}"
    args = (
        "run",
        "--config",
        str(path),
        "--data",
        str(run.data),
        "--storage",
        url,
        "--workers",
        str(workers),
        "--timeout",
        f"{box:.0f}",
        "--no-finalize",  # each phase is timed alone; (b) exports the best validation trial
    )
    sampler = GpuSampler().start()
    try:
        boxed = run.cli(name, *args, box=box + grace)
    finally:
        sampler.stop()
    try:
        counts = trial_counts(url, name)
    except Exception as exc:  # noqa: BLE001 - the study may never have been made
        counts = {"finished": 0, "error": f"{type(exc).__name__}: {exc}"}
    counts.update(url=url, name=name, seconds=boxed.seconds, returncode=boxed.returncode)
    counts["util"] = [u for _, u, _ in sampler.samples]
    text = (
        f"{workers} worker(s), box {box:.0f} s: ran {boxed.seconds:.0f} s (exit "
        f"{boxed.returncode}), {finished_text(counts)}; {sampler.text()}; "
        f"{compile_text(epoch_seconds(boxed.log))}"
    ) + compile_attrs_text(counts)
    if counts.get("best") is not None:
        text += f"; best val_accuracy {counts['best']:.4f}"
    if counts.get("error") or boxed.returncode not in (0, None):
        text += f"; {counts.get('error') or boxed.tail()}"
    counts["text"] = text
    return counts


def frozen_phase(run: Run) -> dict[str, Any]:
    """(f): the frozen search, features extracted once per layer by the first trial."""
    plan = run.plan
    config = base_config(run.data, plan, "gpu-real-frozen", plan.frozen_trials)
    later = plan.frozen_grace + plan.tune_box + plan.tune_grace + plan.best_reserve
    box = run.box(plan.frozen_box, later)
    counts = study_phase(
        run, "gpu-real-frozen", config, plan.frozen_workers, box, plan.frozen_grace
    )
    rate = {}
    if counts["finished"]:
        from bench.real import extraction_rate

        rate = extraction_rate(counts["url"], counts["name"])
    text = counts["text"]
    if rate.get("seconds"):
        text += (
            f"; features {rate['images']:.0f} images in {rate['seconds']:.1f} s = "
            f"{rate['images'] / rate['seconds']:.0f} images/s"
        )
    done = counts["finished"] >= plan.frozen_trials
    run.report.line("f", "jax", text, failed=not done)
    run.figures["frozen"] = {k: v for k, v in counts.items() if k != "text"}
    return counts


def tune_phase(run: Run) -> dict[str, Any]:
    """(t): the fine-tuning search."""
    plan = run.plan
    box = run.box(plan.tune_box, plan.tune_grace + plan.best_reserve)
    config = tune_config(run.data, plan)
    counts = study_phase(run, "gpu-real-tune", config, plan.tune_workers, box, plan.tune_grace)
    text = counts["text"]
    epochs = epoch_seconds(run.workdir / "gpu-real-tune.log")
    steady = [statistics.median(t[1:]) for t in epochs.values() if len(t) >= 2]
    counts["steady_epoch"] = statistics.mean(steady) if steady else None
    run.report.line("t", "jax", text, failed=not counts.get("complete"))
    run.figures["tune"] = {k: v for k, v in counts.items() if k != "text"}
    return counts


def best_phase(run: Run, tune: dict[str, Any]) -> None:
    """(b): export the fine-tuning study's best trial, retrain it, read the test split once."""
    best = run.workdir / "best.json"
    boxed = run.cli(
        "export",
        "export",
        "--study",
        tune["name"],
        "--storage",
        tune["url"],
        "--out",
        str(best),
        box=60,
    )
    if boxed.returncode != 0:
        run.report.line("b", "jax", f"export failed: {boxed.tail()}", failed=True)
        return
    out = run.workdir / "best"
    start = time.perf_counter()
    boxed = run.cli(
        "train-best",
        "train-best",
        "--config",
        str(best),
        "--data",
        str(run.data),
        "--out",
        str(out),
        "--no-refit",
        "--storage",
        tune["url"],
        box=run.box(2 * run.plan.best_reserve, 0),
    )
    metrics_path = out / "metrics.json"
    if boxed.returncode != 0 or not metrics_path.exists():
        run.report.line("b", "jax", f"train-best failed: {boxed.tail()}", failed=True)
        return
    metrics = json.loads(metrics_path.read_text())
    run.figures["best"] = metrics
    accuracy = float(metrics["test"]["accuracy"])
    images = metrics["trained_on"]["images"]
    rate = ""
    if tune.get("steady_epoch"):
        rate = (
            f"; fine-tuning {images / tune['steady_epoch']:.0f} training images/s "
            "(steady epochs, validation included)"
        )
    total = time.time() - run.started
    run.report.line(
        "b",
        "jax",
        f"train-best (plain, test read once) in {time.perf_counter() - start:.0f} s: "
        f"test accuracy {accuracy:.4f} on {metrics['test_images']} images of the pooled "
        f"near-dedup split{rate}; wall time to this result {total:.0f} s from the command's "
        "start",
        failed=accuracy < 0.985 and not run.dry,
    )


def save_logs(run: Run) -> None:
    """Every phase's log and config, and the figures, as one file under --out."""
    (run.workdir / "figures.json").write_text(json.dumps(run.figures, indent=1, default=str))
    with tarfile.open(run.out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(run.workdir.glob("*")):
            if path.suffix in (".log", ".yaml", ".json") and path.is_file():
                tar.add(path, arcname=path.name)


def make_run(args: argparse.Namespace) -> Run:
    from bench.gpu.check import _env

    plan = DRY if args.dry_run else Plan()
    chosen = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    plan = Plan(**{**plan.__dict__, **chosen})
    workdir = Path(tempfile.mkdtemp(prefix="gpu-real-")) if args.dry_run else Path("/tmp/gpu-real")
    workdir.mkdir(parents=True, exist_ok=True)
    env = _env(workdir, args.dry_run)
    env.update(
        KERAS_BACKEND="jax",
        TUMOR_SEARCH_WEIGHTS=str(workdir / "weights"),
        JAX_COMPILATION_CACHE_DIR=str(workdir / "jax-cache"),
    )
    # This process builds the backbone to unpack its weights: the children's backend.
    for name in ("KERAS_BACKEND", "XLA_PYTHON_CLIENT_PREALLOCATE", "TUMOR_SEARCH_WEIGHTS"):
        os.environ[name] = env[name]
    out = (args.out or workdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = float(os.environ.get("BENCH_GPU_STARTED") or time.time())
    report = Report(out / "RESULTS.md", device_name())
    return Run(plan, args.pack.resolve(), workdir, out, env, report, args.dry_run, started)


def cmd_run(args: argparse.Namespace) -> int:
    run = make_run(args)
    p = run.plan
    install = os.environ.get("BENCH_GPU_INSTALL_S")
    run.report.start(
        "real MRI" + (" dry run (CPU)" if run.dry else ""),
        f"{p.backbone} at {p.image_size} px, feature layers {', '.join(p.layers)}; frozen: "
        f"{p.frozen_trials} trials, {p.frozen_workers} workers, box {p.frozen_box:g} s; "
        f"fine-tune: {p.tune_trials} trials, {p.tune_workers} workers, fraction "
        f"{p.tune_fraction:g}, {p.tune_epochs} epochs, box {p.tune_box:g} s; deadline "
        f"{p.deadline:g} s" + (f"; wheels installed in {install} s" if install else ""),
    )
    try:
        if weights_phase(run):
            if "f" in args.phases:
                frozen_phase(run)
            tune = tune_phase(run) if "t" in args.phases else {}
            if tune.get("complete") and "b" in args.phases:
                best_phase(run, tune)
    finally:
        save_logs(run)
        run.report.summary(time.time() - run.started)
    return 1 if run.report.failures else 0


def cmd_pack(args: argparse.Namespace) -> int:
    images = pack_images(args.data.resolve(), args.out, args.quality, args.side)
    print(f"images: {images}", flush=True)
    weights = pack_weights(args.backbone, args.cut, args.out)
    print(f"weights: {weights}", flush=True)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu/real", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="re-encode a dataset folder and the weights to carry")
    pack.add_argument("--data", type=Path, required=True, help="dataset folder (class folders)")
    pack.add_argument("--out", type=Path, default=ROOT / ".gpu-real", help="default .gpu-real")
    pack.add_argument("--quality", type=int, default=80, help="WebP quality (default 80)")
    pack.add_argument("--side", type=int, default=224, help="largest side kept (default 224)")
    pack.add_argument("--backbone", default="xception")
    pack.add_argument("--cut", default="block13", help="feature layer whose cut bounds the weights")
    run = sub.add_parser("run", help="the bench, on the GPU machine (or --dry-run here)")
    run.add_argument("--pack", type=Path, default=ROOT / ".gpu-real", help="what pack wrote")
    run.add_argument("--out", type=Path, help="RESULTS.md and logs.tar.gz (default: work folder)")
    run.add_argument("--dry-run", action="store_true", help="tiny sizes, on CPU")
    run.add_argument("--phases", default="ftb", help="f frozen, t fine-tune, b train-best")
    for name, kind in OPTIONS.items():
        run.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"Plan.{name}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cmd_run(args) if args.command == "run" else cmd_pack(args)


if __name__ == "__main__":
    sys.exit(main())
