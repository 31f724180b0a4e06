"""Trials per minute with 1, 2 and 4 workers, on a database directly and through the
storage proxy, with storage-bound trials.

    python bench/throughput.py --storage postgresql+psycopg2://postgres@127.0.0.1:5432/test

Each measurement creates its own study (`study create`, N trials), starts W worker
processes at the same moment and prints `trials_per_minute_MODE_W_workers: value`, from the
first trial's start to the last trial's end (process start-up beside it). A worker here does
with the storage what `tumor-search worker` does per trial: the stale check, the claim under
the study lock (through the proxy: the proxy's claim), the parameters drawn by the study's
sampler, its heartbeat, an intermediate value and a pruning check per epoch, and the tell;
but each epoch sleeps (`--sleep`) instead of training, so that 2 cores measure the storage
rather than TensorFlow's contention for them. The proxy mode starts `tumor-search
storage-proxy` on a free loopback port. Studies are deleted afterwards. Not part of
`make bench`: it needs a database server to mean anything.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, cli, note, phantoms, report, write_yaml  # noqa: E402


def _config(name: str, trials: int, data: Path, epochs: int) -> dict:
    return {
        "name": name,
        "trials": trials,
        "weights": "none",
        "data": {"path": str(data), "split": "official", "seed": 1, "image_size": 32},
        "training": {"epochs": epochs, "early_stopping_patience": 0, "seed": 0},
        "space": {
            "backbone": ["small_cnn", "mobilenet"],
            "head_depth": {"low": 0, "high": 2},
            "head_width": [16, 32, 64],
            "dropout": {"low": 0.0, "high": 0.3},
            "learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
            "fine_tune": [1.0],
            "batch_size": [32],
        },
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 1},
        "heartbeat": {"interval": 1, "grace_period": 10},
    }


def child(study_name: str, storage: str, sleep: float) -> int:
    """One storage-bound worker: claims, reports and tells trials until the budget is met."""
    import optuna
    from optuna.trial import TrialState

    from search.runtime import optuna_compat as compat
    from search.runtime.claim import WORKER_ATTR, claim_trial, worker_identity
    from search.runtime.storage import StudyLock
    from search.runtime.study import open_study
    from search.space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, config = open_study(study_name, storage, worker=True)
    lock = StudyLock(compat.storage_of(study), study_name)
    while True:
        compat.fail_stale_trials(study)
        trial = claim_trial(study, lock, config)
        if trial is None:
            return 0
        with compat.Heartbeat(study, trial, config.heartbeat.interval):
            trial.set_user_attr(WORKER_ATTR, worker_identity())
            suggest(trial, config.space)
            value, state = 0.0, TrialState.COMPLETE
            for epoch in range(config.training.epochs):
                time.sleep(sleep)
                value = 0.5 + 0.4 * (trial.number % 7) / 7 + 0.01 * epoch
                trial.report(value, epoch)
                if trial.should_prune():
                    state = TrialState.PRUNED
                    break
            compat.tell(study, trial, state, value, "")


def measure(mode: str, url: str, workers: int, args: argparse.Namespace, workdir: Path) -> float:
    import optuna

    name = f"throughput-{mode}-{workers}-{uuid.uuid4().hex[:8]}"
    config = _config(name, args.trials, args.data, args.epochs)
    path = write_yaml(workdir / f"{name}.yaml", config)
    cli("study", "create", "--study", name, "--config", str(path), "--storage", args.storage)
    try:
        command = [sys.executable, __file__, "--child", name, "--storage", url]
        command += ["--sleep", str(args.sleep)]
        start = time.perf_counter()
        procs = [subprocess.Popen(command, cwd=ROOT) for _ in range(workers)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - start
        if any(codes):
            raise RuntimeError(f"worker exit codes {codes}")
        done = optuna.load_study(study_name=name, storage=args.storage).get_trials(deepcopy=False)
        finished = [t for t in done if t.state.is_finished()]
        if len(finished) != args.trials:
            raise RuntimeError(f"{len(finished)} trials finished, budget {args.trials}")
        first = min(t.datetime_start for t in finished)
        last = max(t.datetime_complete for t in finished)
        rate = 60.0 * len(finished) / (last - first).total_seconds()
        report(
            f"trials_per_minute_{mode}_{workers}_worker{'s' if workers > 1 else ''}",
            rate,
            trials=len(finished),
            including_start_up=f"{60.0 * len(finished) / wall:.1f}",
        )
        return rate
    finally:
        optuna.delete_study(study_name=name, storage=args.storage)


def start_proxy(storage: str) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "search", "storage-proxy", "--storage", storage]
    proc = subprocess.Popen(
        [*command, "--port", str(port)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "storage proxy for" not in line:
        proc.kill()
        raise RuntimeError(f"storage-proxy did not start: {line}{proc.stderr.read()}")
    return proc, f"grpc://127.0.0.1:{port}"


def table(rates: dict[tuple[str, int], float], counts: list[int]) -> str:
    head = "| workers | " + " | ".join(str(w) for w in counts) + " |"
    rows = [head, "|---" * (len(counts) + 1) + "|"]
    for mode in ("direct", "proxy"):
        cells = " | ".join(f"{rates[(mode, w)]:.0f}" for w in counts)
        rows.append(f"| {mode} (trials/min) | {cells} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="database URL the workers share")
    parser.add_argument("--trials", type=int, default=40, help="trials per study (default 40)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial (default 5)")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per epoch (0.05)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    parser.add_argument("--child", metavar="STUDY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.storage, args.sleep)
    counts = [int(w) for w in args.workers.split(",")]
    rates: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="tumor-throughput-") as tmp:
        workdir = Path(tmp)
        os.environ["TUMOR_SEARCH_CACHE"] = str(workdir / "cache")
        args.data = phantoms(workdir, per_class=10, size=32)
        proxy, proxy_url = start_proxy(args.storage)
        try:
            for mode, url in (("direct", args.storage), ("proxy", proxy_url)):
                for workers in counts:
                    note(f"{mode}: {workers} worker(s), {args.trials} trials ...")
                    rates[(mode, workers)] = measure(mode, url, workers, args, workdir)
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
    print(table(rates, counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
