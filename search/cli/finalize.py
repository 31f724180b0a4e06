"""`tumor-search finalize`: re-score the top trials by K-fold cross-validation."""

from __future__ import annotations

import argparse

from search.cli.args import add_study


def whole_number(text: str) -> int:
    """An integer; its range is checked by finalize, whose message names the limit."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def cmd_finalize(args: argparse.Namespace) -> int:
    from search.results.finalize import finalize, refit_text, table

    summary = finalize(args.study, args.storage, args.data, top=args.top, folds=args.folds)
    print(
        f"\nFinalists of study {args.study!r}: {summary['folds']}-fold CV over "
        f"{summary['images']} train+val images, {summary['metric']} (* the winner):"
    )
    print(table(summary))
    print(
        f"winner: trial {summary['winner']} ({summary['rule']}); train-best --refit trains it "
        f"for {refit_text(summary)}"
    )
    print(f"export it: tumor-search export --study {args.study} --out best.json")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "finalize",
        parents=[common],
        help="re-score the top trials by cross-validation and pick the winner",
        description="Re-train the top N completed feasible trials with stratified K-fold "
        "cross-validation over train+val (copies of an image stay in one fold; the test split "
        "is never read), pick the best mean score, and record the finalists, the winner, its "
        "epoch count and its out-of-fold logits on the study (export then uses the winner).",
    )
    add_study(p)
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument(
        "--top", type=whole_number, default=5, metavar="N", help="trials to re-score (default 5)"
    )
    p.add_argument("--folds", type=whole_number, default=5, metavar="K", help="folds (default 5)")
    p.set_defaults(handler=cmd_finalize)
