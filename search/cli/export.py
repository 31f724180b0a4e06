"""`tumor-search export`: the best configuration as best.json."""

from __future__ import annotations

import argparse

from search.cli.args import (
    add_study,
    positive_int,
)


def cmd_export(args: argparse.Namespace) -> int:
    from search.results.export import export_best
    from search.results.outputs import check_writable_file

    out = check_writable_file(args.out)
    payload = export_best(args.study, args.storage, out, top=args.top)
    print(
        f"wrote {out}: trial {payload['trial']} of study {args.study!r}, "
        f"{payload['metric']} {payload['value']:.4f}"
    )
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="write the best configuration to best.json",
        description="Replay the best trial's parameters through the search space and write its "
        "configuration, the study config, its validation metrics, the data fingerprint and "
        "library versions (YAML when the name ends in .yaml).",
    )
    add_study(p)
    p.add_argument(
        "--out", default="best.json", metavar="FILE", help="output file (default best.json)"
    )
    p.add_argument(
        "--top", type=positive_int, default=1, metavar="K", help="also list the K best trials"
    )
    p.set_defaults(handler=cmd_export)
