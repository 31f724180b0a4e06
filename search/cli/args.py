"""What the commands share: argument types, the --study/--storage options, config loading."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from common.progress import log


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


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


RETRY_HELP = (
    "retry an unreachable storage (a restart, a database still starting) for S seconds, "
    "then exit 75 (default: the study's storage.retry_seconds, 120; 0: never)"
)


def add_storage_retry(parser: argparse.ArgumentParser, help: str = RETRY_HELP) -> None:  # noqa: A002
    parser.add_argument("--storage-retry", type=non_negative_float, metavar="S", help=help)


def apply_storage_retry(args: argparse.Namespace) -> None:
    """Hand ``--storage-retry`` on to this process's workers, its children and restarts."""
    from search.runtime.outage import RETRY_ENV

    if getattr(args, "storage_retry", None) is not None:
        os.environ[RETRY_ENV] = repr(args.storage_retry)


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


def add_download_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--download-weights",
        action="store_true",
        help="let Keras download ImageNet weights that neither the weights folder nor Keras's "
        "cache holds (default: refuse, naming them: Keras's download has no timeout)",
    )


def add_artifacts(parser: argparse.ArgumentParser, recorded: bool = True) -> None:
    what = (
        "folder of the study's artifact store (trials' learning curves and confusion matrices, "
        "train-best's figures), recorded on a new study; a shared path for workers on "
        "several machines (default: NAME-artifacts/ beside an SQLite file, else artifacts/ "
        "under the cache folder)"
        if recorded
        else "artifact store to show (default: the one the storage's studies recorded)"
    )
    parser.add_argument("--artifacts", metavar="DIR", help=what)


def load_config_with_overrides(args: argparse.Namespace) -> Any:
    from search.config import load_config

    config = load_config(args.config)
    return config.with_overrides(data_path=args.data, trials=getattr(args, "trials", None))


# Below this many validation images one image moves accuracy by more than 0.01: trials
# whose scores differ by less than a point cannot be told apart, and the best of many
# trials is mostly the luckiest.
MIN_RANKING_VAL_IMAGES = 100


def small_validation_warning(n_val: int) -> str | None:
    """One line when a validation split is too small to rank trials."""
    if n_val >= MIN_RANKING_VAL_IMAGES or n_val <= 0:
        return None
    return (
        f"warning: {n_val} validation image{'s' if n_val != 1 else ''}: accuracy moves in "
        f"steps of {1 / n_val:.3g}, too coarse to rank trials (use more data or a larger "
        "data.val_fraction; finalize, which `run` ends with, ranks the best by cross-validation)"
    )


def warn_dropped(data: Any) -> None:
    """Dropped copies of training images, and test classes they left thin."""
    for warning in data.data_warnings():
        log(warning)


def warn_small_validation(data: Any) -> None:
    """Once the study exists (bad input is reported first, alone): a validation split too
    small to rank trials."""
    warning = small_validation_warning(data.counts()["val"])
    if warning:
        log(warning)
