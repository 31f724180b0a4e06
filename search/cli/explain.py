"""`tumor-search explain`: Grad-CAM overlays of a saved model's predictions."""

from __future__ import annotations

import argparse
import sys


def cmd_explain(args: argparse.Namespace) -> int:
    from common.progress import log
    from search.results.explain import Explanation, explain_paths

    def show(result: Explanation) -> None:
        print(f"{result.path}\t{result.label}\t{result.probability:.3f}\t{result.overlay}")
        sys.stdout.flush()  # one line per image as it is written, also into a pipe

    results = explain_paths(args.model, args.paths, args.out, on_result=show)
    log(f"wrote {len(results)} overlay{'s' if len(results) != 1 else ''} to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        help="show where a saved model looked (Grad-CAM overlays)",
        description="Write one Grad-CAM overlay PNG per image into --out, titled with the "
        "predicted class and its probability, and print one line per image: path, class, "
        "probability, overlay file. The heatmap weighs the backbone's last convolutional "
        "feature map by the gradient of the predicted class (TensorFlow backend).",
    )
    p.add_argument(
        "--model", required=True, metavar="FILE.keras", help="model written by train-best"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the overlays (created)")
    p.set_defaults(handler=cmd_explain)
