"""`tumor-predict`: classify image files with an ONNX model exported by tumor-search.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from tumor_predict.errors import PredictError
from tumor_predict.predict import Prediction

PROG = "tumor-predict"


def write_predictions(predictions: list[Prediction], as_json: bool, out: TextIO) -> None:
    """One tab-separated line an image (``path  label  name p  name p ...``, 3 decimals),
    or a JSON list of ``{path, label, probabilities}``; `tumor-search predict` writes alike."""
    if as_json:
        json.dump([p.__dict__ for p in predictions], out, indent=2)
        out.write("\n")
        return
    for p in predictions:
        probs = "  ".join(f"{name} {value:.3f}" for name, value in p.probabilities.items())
        out.write(f"{p.path}\t{p.label}\t{probs}\n")


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Print each image's predicted class and class probabilities, with an ONNX model "
            "exported by tumor-search (train-best --format onnx). Runs in onnxruntime: no "
            "TensorFlow needed."
        ),
        epilog="Exit codes: 0 ok, 2 bad input (a bad model file, path or image), 130 interrupted.",
    )
    parser.add_argument("--model", required=True, metavar="FILE.onnx", help="the ONNX model")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="images a run (default 32)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"argument --batch-size: must be at least 1, got {args.batch_size}")
    from tumor_predict.predict import predict_paths

    try:
        predictions = predict_paths(args.model, args.paths, args.batch_size)
        write_predictions(predictions, args.json, sys.stdout)
        sys.stdout.flush()
    except PredictError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # piped into `head`, which closed early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
