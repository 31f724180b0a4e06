"""`tumor-search export`: the chosen configuration as best.json."""

from __future__ import annotations

import argparse
import sys

from search.cli.args import (
    add_study,
    positive_int,
)


def trial_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a trial number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a trial number (0 or more), got {text!r}")
    return value


def cmd_pareto(args: argparse.Namespace) -> int:
    """List the Pareto-optimal trials (writes nothing)."""
    import shlex

    from search.results.pareto import front, front_table
    from search.runtime.study import describe_storage, open_study

    study, config = open_study(args.study, args.storage)
    names = config.objective.names
    print(f"Pareto front of study {args.study!r} ({', '.join(names)}, validation split):")
    print(front_table(study, names))
    if front(study):
        storage = shlex.quote(describe_storage(args.storage))
        print(
            f"export one: tumor-search export --study {shlex.quote(args.study)} "
            f"--storage {storage} --trial N --out best.json"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search.results.export import export_best
    from search.results.finalize import refit_text
    from search.results.outputs import check_writable_file

    if args.pareto:
        return cmd_pareto(args)
    out = check_writable_file(args.out)
    payload = export_best(args.study, args.storage, out, top=args.top, trial=args.trial)
    if payload.get("warning"):
        print(payload["warning"], file=sys.stderr)
    print(
        f"wrote {out}: trial {payload['trial']} of study {args.study!r}, "
        f"{payload['metric']} {payload['value']:.4f} on the validation split"
    )
    line = f"selected by: {payload['selected_by']}"
    final = payload.get("finalize")
    if final:
        cv = next(f for f in final["finalists"] if f["trial"] == payload["trial"])
        line += f" (CV {cv['mean']:.4f} ± {cv['std']:.4f}; refit for {refit_text(final)})"
    print(line)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="write the chosen configuration to best.json",
        description="Replay the chosen trial's parameters through the search space and write "
        "its configuration, the study config, its validation metrics, the data fingerprint and "
        "library versions (YAML when the name ends in .yaml). The chosen trial is finalize's "
        "cross-validated winner when the study has one (with its out-of-fold logits), else the "
        "best feasible trial on the validation split; the file and the output say which rule "
        "chose it. A multi-objective study has a Pareto front instead of a best trial: list it "
        "with --pareto, export one of its trials with --trial N.",
    )
    add_study(p)
    p.add_argument(
        "--out", default="best.json", metavar="FILE", help="output file (default best.json)"
    )
    p.add_argument(
        "--top", type=positive_int, default=1, metavar="K", help="also list the K best trials"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--trial",
        type=trial_number,
        metavar="N",
        help="export completed trial N instead (warns when it breaks a constraint)",
    )
    which.add_argument(
        "--pareto",
        action="store_true",
        help="list the Pareto-optimal trials (of a multi-objective study: objective.metrics) "
        "instead of writing a file; export one of them with --trial N",
    )
    p.set_defaults(handler=cmd_export)
