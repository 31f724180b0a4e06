"""`tumor-search weights import SOURCE --backbone NAME` and `tumor-search weights list [--json]`.

The weights folder (``$TUMOR_SEARCH_WEIGHTS``, else ``weights/`` under the cache folder)
holds one imported weights file per backbone; ``weights: imagenet`` loads it first, then
Keras's own cache, and downloads only with ``--download-weights`` (see `models.weights_store`).
"""

from __future__ import annotations

import argparse
import json
import sys

from common.progress import log


def cmd_weights_import(args: argparse.Namespace) -> int:
    from models.weights_store import import_weights

    imported = import_weights(args.source, args.backbone)
    info = imported.record
    log(
        f"imported {args.backbone} weights ({info['parameters']:,} parameters, from "
        f"{imported.found_in}) to {imported.path}"
    )
    print(f"{args.backbone}\t{imported.path}\tsha256:{info['weights_sha256']}")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from models.weights_store import weights_dir, weights_listing

    rows = weights_listing()
    if args.json:
        json.dump({"weights_dir": str(weights_dir()), "backbones": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"weights folder: {weights_dir()}")
    print(f"{'backbone':<20} {'local weights':<20} {'imported':<26} keras cache")
    for row in rows:
        local = row["weights"]
        sha = f"sha256:{local['sha256'][:12]}" if local else "none"
        when = str((local["provenance"] or {}).get("imported_at", "?")) if local else "-"
        cached = "yes" if row["keras_cache"] else "no"
        print(f"{row['backbone']:<20} {sha:<20} {when:<26} {cached}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    weights = sub.add_parser(
        "weights",
        help="import and list pretrained backbone weights for offline use",
        description="Manage the local weights folder ($TUMOR_SEARCH_WEIGHTS, else weights/ "
        "under the cache folder). 'weights: imagenet' loads a backbone's weights from it "
        "first, then from Keras's cache ($KERAS_HOME/models); run and study create download "
        "nothing unless given --download-weights.",
    )
    weights_sub = weights.add_subparsers(
        dest="weights_command", metavar="{import,list}", required=True
    )
    p = weights_sub.add_parser(
        "import",
        parents=[common],
        help="check a weights file or saved model against a backbone and store its weights",
        description="Store a backbone's weights in the weights folder as "
        "<backbone>.weights.h5 with a provenance record <backbone>.json (source and its "
        "sha256, weights sha256, parameter count, date, Keras version); a second import "
        "replaces both. SOURCE is a weights file of the notop Keras application (.weights.h5, "
        "or a Keras *_notop.h5 download) or a saved .keras/.h5 model that holds the backbone "
        "as a nested model. Its architecture must be the registry backbone's: else exit 2, "
        "saying what differs.",
    )
    p.add_argument("source", metavar="SOURCE", help="weights file or saved model")
    p.add_argument(
        "--backbone",
        required=True,
        metavar="NAME",
        help="registry backbone the weights belong to (see `tumor-search backbones`)",
    )
    p.set_defaults(handler=cmd_weights_import)
    p = weights_sub.add_parser(
        "list",
        parents=[common],
        help="every backbone with its local weights and whether Keras's cache holds it",
        description="List every registry backbone with its imported weights (path, sha256, "
        "provenance) or none, and whether Keras's own cache ($KERAS_HOME/models) holds its "
        "ImageNet file.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: weights_dir and, per backbone, weights (or null) and "
        "keras_cache (the cached files)",
    )
    p.set_defaults(handler=cmd_weights_list)
