"""What the commands share: argument types, the --study/--storage options, config loading."""

from __future__ import annotations

import argparse
import time
from typing import Any

from common.progress import log

# When this process started: a worker that restarts itself for memory counts --timeout
# from here (its first process's start), not from its restart.
STARTED_AT = time.time()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def add_study(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, metavar="NAME", help="study name")
    add_storage(parser)


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: $TUMOR_SEARCH_STORAGE, else sqlite:///studies.db)",
    )


def load_config_with_overrides(args: argparse.Namespace) -> Any:
    from search.config import load_config

    config = load_config(args.config)
    return config.with_overrides(data_path=args.data, trials=getattr(args, "trials", None))


def warn_dropped(data: Any) -> None:
    warning = data.dropped_warning()
    if warning:
        log(warning)

