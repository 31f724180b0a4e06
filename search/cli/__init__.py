"""The `tumor-search` command line: one module per command, each with its parser beside its
handler, registered in `COMMANDS`.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 a bug, 74 a full
disk, 75 a storage unreachable past its retry limit, 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from search.cli import (
    backbones,
    cache,
    dashboard,
    data,
    explain,
    export,
    finalize,
    predict,
    proxy,
    report,
    run,
    slurm,
    status,
    study,
    train_best,
    weights,
    worker,
)
from search.errors import ExportFailed, InputError, one_line

PROG = "tumor-search"

# The commands in the order `--help` lists them: adding a command adds its module here.
COMMANDS = (
    data,
    cache,
    backbones,
    weights,
    run,
    study,
    worker,
    slurm,
    proxy,
    status,
    finalize,
    export,
    train_best,
    explain,
    predict,
    report,
    dashboard,
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from data.errors import DataError
    from models.errors import ModelError

    return (InputError, DataError, ModelError)


def build_parser() -> argparse.ArgumentParser:

    common = _Parser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress output on stderr")

    parser = _Parser(
        prog=PROG,
        description=(
            "Hyperparameter search for transfer-learning image classifiers (brain-tumour MRI "
            "first): an Optuna study samples backbone, head, dropout and learning rate; each "
            "trial trains a Keras model with pruning; results persist in SQLite or PostgreSQL "
            "and optuna-dashboard shows them live."
        ),
        epilog=(
            "Storage: --storage, else $TUMOR_SEARCH_STORAGE, else sqlite:///studies.db. "
            "Exit codes: 0 ok, 2 bad input, 1 bug, 74 disk full, 75 storage unreachable "
            "past its retry limit, 130/143 interrupted."
        ),
    )
    # Also accepted before the command; its own dest, or the command's default would win.
    parser.add_argument(
        "--quiet", "-q", dest="quiet_all", action="store_true", help="no progress output on stderr"
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for module in COMMANDS:
        module.register(sub, common)
    return parser


def _quiet_libraries() -> None:
    """Optuna logs every trial at INFO; our own lines say the same more briefly."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; `argv` None reads the process's own arguments.

    Only a process started as the command (`argv` None) may replace itself to release memory
    (a worker's restart); a caller that hands `argv` keeps its process.
    """
    started_at = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    # A worker that restarts itself for memory counts --timeout from here (its first
    # process's start, carried through the restart), not from its restart.
    args.started_at = started_at
    from search.runtime.restart import allow_restarts

    allow_restarts(argv is None)
    from common.progress import set_quiet

    set_quiet(bool(getattr(args, "quiet", False) or args.quiet_all))
    if getattr(args, "uses_optuna", True):  # `predict` runs an .onnx model without Optuna
        _quiet_libraries()
    bad_input = _bad_input_types()
    from common.disk import DiskFullError
    from search.runtime.outage import StorageUnavailable

    try:
        return int(args.handler(args) or 0)
    except bad_input as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except (DiskFullError, StorageUnavailable, ExportFailed) as exc:  # 74, 75, 1: see README
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
