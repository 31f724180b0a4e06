"""The GPU proof in one command: `bench/gpu/check` (this module is what it runs).

    bash bench/gpu/check --results $OUT/RESULTS.md         # on the GPU machine
    bench/gpu/check --dry-run                              # here, on CPU, at tiny sizes

Parts, each in its own time box, each appending its line to the results file as it ends:
(a) training images/s of MobileNetV2 per backend, (b) feature-cache extraction, (c) a study
on the phantoms in a time box with GPU utilisation sampled, (d) the same box with 2 workers
on the one GPU. A part that would start after the deadline is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.gpu import parts
from bench.gpu.report import Report, device_name

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("jax", "torch", "tensorflow")


@dataclass(frozen=True)
class Sizes:
    """What each part measures and how long it may take (seconds)."""

    backbone: str = "mobilenet_v2"
    size: int = 224
    batch: int = 64
    steps: int = 30
    fit_batches: int = 20
    feature_images: int = 2048
    per_class: int = 816
    box_train: float = 65.0
    box_features: float = 40.0
    box_study: float = 85.0
    grace: float = 20.0
    deadline: float = 420.0


DRY = Sizes(
    backbone="small_cnn",
    size=32,
    batch=8,
    steps=3,
    fit_batches=3,
    feature_images=48,
    per_class=10,
    box_train=50.0,
    box_features=40.0,
    box_study=15.0,
    grace=35.0,
    deadline=240.0,
)


def present_backends() -> list[str]:
    return [name for name in BACKENDS if importlib.util.find_spec(name) is not None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/gpu/check", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "all"),
        default="all",
        help="Keras backend(s) of part (a); the first one also runs (b)-(d) (default: all present)",
    )
    parser.add_argument("--deadline", type=float, help="seconds for the whole run (420; dry 240)")
    parser.add_argument("--results", type=Path, help="results file (bench/gpu/RESULTS.md)")
    parser.add_argument("--workdir", type=Path, help="work folder (/tmp/gpu-proof)")
    parser.add_argument("--logs", type=Path, help="copy each part's log here as it ends")
    parser.add_argument("--box-train", type=float, help="seconds of (a) per backend (65)")
    parser.add_argument("--box-study", type=float, help="seconds of (c) and of (d) (85)")
    parser.add_argument(
        "--parts",
        default="abcd",
        help="which parts to run, as letters (default abcd; the dry run always checks wheels)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="workers of the study in (c); (d) runs twice as many on the one GPU (default 1)",
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, wheel check")
    args = parser.parse_args(argv)
    if not args.parts or set(args.parts) - set("abcd"):
        parser.error(f"--parts takes letters of abcd, not {args.parts!r}")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    for name in ("deadline", "box_train", "box_study"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def _backends(choice: str) -> list[str]:
    present = present_backends()
    if choice == "all":
        return present
    if choice not in present:
        raise SystemExit(f"bench/gpu/check: backend {choice} is not installed here")
    return [choice]


def _env(workdir: Path, dry: bool) -> dict[str, str]:
    """The children's environment: our code on the path, caches in the work folder."""
    env = dict(os.environ)
    paths = [str(ROOT), *([str(ROOT / "bench" / "gpu" / "sitecustom")] if dry else [])]
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    env["TUMOR_SEARCH_CACHE"] = str(workdir / "cache")
    env["KERAS_HOME"] = str(workdir / "keras-home")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # two workers share the GPU
    if dry:
        # 2 shared cores: PyTorch's OpenMP threads spin against each other and another
        # process (small_cnn 32 px: 1 s a step, 40 ms with one thread).
        env.setdefault("OMP_NUM_THREADS", "1")
        env["BENCH_GPU_MODULES"] = str(workdir / "modules")
        (workdir / "modules").mkdir(parents=True, exist_ok=True)
    return env


def make_context(args: argparse.Namespace) -> parts.Context:
    sizes = DRY if args.dry_run else Sizes()
    for name in ("deadline", "box_train", "box_study"):
        if getattr(args, name) is not None:
            sizes = replace(sizes, **{name: getattr(args, name)})
    workdir = args.workdir or (
        Path(tempfile.mkdtemp(prefix="gpu-proof-dry-")) if args.dry_run else Path("/tmp/gpu-proof")
    )
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    default = workdir / "RESULTS.md" if args.dry_run else ROOT / "bench" / "gpu" / "RESULTS.md"
    started = float(os.environ.get("BENCH_GPU_STARTED") or time.time())
    return parts.Context(
        sizes=sizes,
        backends=_backends(args.backend),
        workdir=workdir,
        env=_env(workdir, args.dry_run),
        python=sys.executable,
        dry=args.dry_run,
        report=Report((args.results or default).resolve(), device_name()),
        started=started,
        logs=args.logs.resolve() if args.logs else None,
        parts=args.parts,
        workers=args.workers,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = make_context(args)
    if not ctx.backends:
        print("bench/gpu/check: none of jax, torch, tensorflow is installed", file=sys.stderr)
        return 2
    s = ctx.sizes
    mode = "dry run (CPU, tiny sizes)" if ctx.dry else "GPU run"
    install = os.environ.get("BENCH_GPU_INSTALL_S")
    ctx.report.start(
        mode,
        f"Backends {', '.join(ctx.backends)}; {s.backbone} {s.size} px batch {s.batch}; "
        f"deadline {s.deadline:g} s; parts {ctx.parts}, study workers {ctx.workers} (c) and "
        f"{2 * ctx.workers} (d)" + (f"; wheels installed in {install} s" if install else ""),
    )
    parts.run_all(ctx)
    ctx.report.summary(time.time() - ctx.started)
    return 1 if ctx.report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
