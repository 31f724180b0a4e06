"""`tumor-search study create`: the storage tables and the study, before any worker starts."""

from __future__ import annotations

import argparse

from search.cli.args import (
    add_artifacts,
    add_download_weights,
    add_storage,
    load_config_with_overrides,
    positive_int,
    warn_dropped,
    warn_small_validation,
)


def cmd_study_create(args: argparse.Namespace) -> int:
    from search.runtime.storage import parse_url, resolve_url
    from search.runtime.study import create_study, log_created
    from search.study_data import prepare
    from search.training.weights import ensure_weights

    config = load_config_with_overrides(args)
    config.weights_policy()  # a weights file must exist where the study is made
    url = resolve_url(args.storage)
    parse_url(url)
    data = prepare(config, args.data)
    warn_dropped(data)
    ensure_weights(config, download=args.download_weights)  # before the study is made
    result = create_study(args.study or config.name, url, config, data, args.artifacts)
    log_created(result, url)
    warn_small_validation(data)
    print(result.study.study_name)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    config_help = "study config: demo, demo-pareto, kaggle, or a path to a YAML file (default demo)"

    study = sub.add_parser(
        "study", help="create a study before starting workers", description="Manage studies."
    )
    study_sub = study.add_subparsers(dest="study_command", metavar="{create}", required=True)
    p = study_sub.add_parser(
        "create",
        parents=[common],
        help="create the storage tables and the study",
        description="Create the storage tables and the study once, before any worker starts: "
        "the study holds the whole config and the data fingerprint, and its first trials are "
        "the seed study's configurations. An identical existing study is left as it is.",
    )
    p.add_argument("--study", metavar="NAME", help="study name (default: the config's name)")
    add_storage(p)
    p.add_argument("--config", default="demo", help=config_help)
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument(
        "--trials", type=positive_int, metavar="N", help="trial budget (default: the config's)"
    )
    add_download_weights(p)
    add_artifacts(p)
    p.set_defaults(handler=cmd_study_create)
