"""`tumor-search predict`: classify image files with a saved model."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_predict(args: argparse.Namespace) -> int:
    from search.results.predict import predict_paths

    predictions = predict_paths(args.model, args.paths)
    if args.json:
        json.dump([p.__dict__ for p in predictions], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for p in predictions:
        probs = "  ".join(f"{name} {value:.3f}" for name, value in p.probabilities.items())
        print(f"{p.path}\t{p.label}\t{probs}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="classify image files with a saved model",
        description="Print each image's predicted class and class probabilities.",
    )
    p.add_argument(
        "--model", required=True, metavar="FILE.keras", help="model written by train-best"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=cmd_predict)
