"""`tumor-search report`: a self-contained HTML report of a study."""

from __future__ import annotations

import argparse

from search.cli.args import (
    add_study,
)


def cmd_report(args: argparse.Namespace) -> int:
    from search.results.outputs import check_writable_file
    from search.results.report import write_report

    out = check_writable_file(args.out)
    summary = write_report(args.study, args.storage, out)
    print(f"wrote {out}: {summary}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of a study",
        description="Write one HTML file (opens offline) with plotly figures of the study.",
    )
    add_study(p)
    p.add_argument("--out", required=True, metavar="report.html", help="output file")
    p.set_defaults(handler=cmd_report)
