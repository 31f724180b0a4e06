"""`tumor-search backbones`: the backbone registry."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_backbones(args: argparse.Namespace) -> int:
    from models.backend import runtime_info
    from models.registry import list_backbones

    records = list_backbones()
    runtime = runtime_info()
    if args.json:
        json.dump({**runtime, "backbones": [r.to_dict() for r in records]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"Keras {runtime['keras']}, backend {runtime['backend']}, on {runtime['device']}")
    head = f"{'name':<20} {'family':<16} {'default':>7} {'min':>4} {'features':>8}"
    print(f"{head}  {'preprocessing':<13}  feature layers (width)")
    for r in records:
        layers = ", ".join(f"{name} ({r.feature_dim_at(name)})" for name in r.feature_layers)
        print(
            f"{r.name:<20} {r.family:<16} {r.default_size:>7} {r.min_size:>4} {r.feature_dim:>8}"
            f"  {r.preprocessing:<13}  {layers}"
        )
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "backbones",
        parents=[common],
        help="list the backbones a search space may use",
        description="List the registered backbones: family, default and minimum input size, "
        "pooled feature width, in-graph preprocessing and the places a head may take its features "
        "from (space.feature_layer: top, or an earlier cut); and the Keras backend "
        "(KERAS_BACKEND: tensorflow, jax or torch) and device a worker here would use.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: keras, backend, device and the backbones list",
    )
    p.set_defaults(handler=cmd_backbones)
