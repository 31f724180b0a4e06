"""`tumor-search status`: trial counts, best value, running trials and failures."""

from __future__ import annotations

import argparse
import json
import sys

from search.cli.args import (
    add_study,
)


def cmd_status(args: argparse.Namespace) -> int:
    from search.results.status import print_status, study_status

    status = study_status(args.study, args.storage)
    if args.json:
        json.dump(status, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_status(status)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="trial counts, best value and running trials",
        description="Show a study's trials by state, its budget, the best trial, running trials and failures.",
    )
    add_study(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_status)
