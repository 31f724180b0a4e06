"""`tumor-search worker`: run trials of an existing study."""

from __future__ import annotations

import argparse
import os

from common.progress import log
from search.cli.args import (
    add_storage_retry,
    add_study,
    apply_storage_retry,
    positive_float,
    positive_int,
)


def cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    apply_storage_retry(args)
    from search.results.status import progress_line
    from search.runtime.restart import RestartState
    from search.runtime.storage import resolve_url
    from search.runtime.worker import run_here

    restarted = RestartState.take_from_environment()
    report = run_here(
        args.study,
        resolve_url(args.storage),
        args.data,
        args.trials,
        args.timeout,
        restarted,
        args.started_at,
        leave_for_finalize=args.leave_for_finalize,
        progress=progress_line,
    )
    log(
        f"worker done: {report.completed} completed, {report.pruned} pruned, {report.failed} failed"
        + (f", {report.lost} given up to another worker" if report.lost else "")
        + (f" ({report.reason})" if report.reason else "")
    )
    return report.exit_code


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "worker",
        parents=[common],
        help="run trials of an existing study",
        description="Run trials of an existing study until its budget, --trials or --timeout. "
        "Everything else comes from the study; the local data must match its fingerprint. "
        "--storage also takes grpc://HOST:PORT, a `tumor-search storage-proxy` in front of "
        "the database (for many workers).",
    )
    add_study(p)
    p.add_argument(
        "--trials", type=positive_int, metavar="N", help="at most N trials from this worker"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="start no trial after S seconds (default: the config's timeout, if any)",
    )
    p.add_argument(
        "--data", metavar="DIR", help="this machine's copy of the dataset (default: the config's)"
    )
    p.add_argument("--gpu", metavar="ID", help="use only this GPU (sets CUDA_VISIBLE_DEVICES)")
    # Set by `run`'s launcher: stop the search early enough for run's finalize to fit.
    p.add_argument("--leave-for-finalize", action="store_true", help=argparse.SUPPRESS)
    add_storage_retry(p)
    p.set_defaults(handler=cmd_worker)
