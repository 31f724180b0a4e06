"""The search-service commands: parsers and handlers.

Handlers import what they need when they run, so `--help` and light commands stay fast and
bad input is refused before TensorFlow loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from data.progress import is_quiet, log


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def _add_study(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, metavar="NAME", help="study name")
    _add_storage(parser)


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: $TUMOR_SEARCH_STORAGE, else sqlite:///studies.db)",
    )


# ---------------------------------------------------------------- backbones


def cmd_backbones(args: argparse.Namespace) -> int:
    from models.registry import list_backbones

    records = list_backbones()
    if args.json:
        json.dump([r.to_dict() for r in records], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'name':<20} {'family':<16} {'default':>7} {'min':>4} {'features':>8}  preprocessing")
    for r in records:
        print(
            f"{r.name:<20} {r.family:<16} {r.default_size:>7} {r.min_size:>4} {r.feature_dim:>8}  {r.preprocessing}"
        )
    return 0


# ---------------------------------------------------------------- study create / run / worker


def _load_config(args: argparse.Namespace) -> Any:
    from search.config import load_config

    config = load_config(args.config)
    return config.with_overrides(data_path=args.data, trials=getattr(args, "trials", None))


def cmd_study_create(args: argparse.Namespace) -> int:
    from search.storage import parse_url, resolve_url
    from search.study import create_study, log_created
    from search.study_data import prepare

    config = _load_config(args)
    config.weights_policy()  # a weights file must exist where the study is made
    url = resolve_url(args.storage)
    parse_url(url)
    data = prepare(config, args.data)
    _warn_dropped(data)
    result = create_study(args.study or config.name, url, config, data)
    log_created(result, url)
    print(result.study.study_name)
    return 0


def _warn_dropped(data: Any) -> None:
    warning = data.dropped_warning()
    if warning:
        log(warning)


# When this process started: a worker that restarts itself for memory counts --timeout
# from here (its first process's start), not from its restart.
_STARTED_AT = time.time()


def cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    from search.restart import RestartState, restart_process
    from search.storage import resolve_url
    from search.worker import restart_state, run_worker

    restarted = RestartState.take_from_environment()
    report = run_worker(
        args.study,
        resolve_url(args.storage),
        args.data,
        args.trials,
        args.timeout,
        restarted=restarted,
    )
    if report.restart:
        started = restarted.started_at if restarted else _STARTED_AT
        restart_process(restart_state(report, started))
    log(
        f"worker done: {report.completed} completed, {report.pruned} pruned, {report.failed} failed"
        + (f" ({report.reason})" if report.reason else "")
    )
    return report.exit_code


def _stored_config(url: str, name: str) -> Any:
    """The config stored in study `name`, or None when there is no such study yet."""
    from search.storage import has_tables, open_storage
    from search.study import load_study, study_config, study_exists

    if not has_tables(url):
        return None
    storage = open_storage(url)
    if not study_exists(storage, name):
        return None
    return study_config(load_study(name, storage))


def cmd_run(args: argparse.Namespace) -> int:
    from search.config import load_config
    from search.launcher import launch, parse_gpus, worker_specs
    from search.restart import RestartState, restart_process
    from search.status import dashboard_commands, top_trials_table
    from search.storage import has_tables, open_storage, parse_url, resolve_url
    from search.study import BUDGET_ATTR, create_study, log_created, open_study, study_exists
    from search.study_data import prepare
    from search.worker import ensure_weights, restart_state, run_worker

    restarted = RestartState.take_from_environment()
    gpus = parse_gpus(args.gpus) if args.gpus else None
    url = resolve_url(args.storage)
    parsed = parse_url(url)
    # Without --config an existing study resumes with its own config (a second machine
    # needs only --study and --storage); a new one gets the demo config.
    stored = None if args.config else _stored_config(url, args.study or load_config("demo").name)
    config = (stored or load_config(args.config or "demo")).with_overrides(
        data_path=args.data, trials=args.trials
    )
    name = args.study or config.name
    data = prepare(config, args.data)
    _warn_dropped(data)
    # Nothing is written to the storage until the data and the weights are known to be good.
    # Without --config the look above already told whether the study exists.
    exists = stored is not None or (
        args.config is not None and has_tables(url) and study_exists(open_storage(url), name)
    )
    if not exists:
        ensure_weights(config)
    result = create_study(name, url, config, data)
    if not result.created and args.trials is not None:
        result.study.set_user_attr(BUDGET_ATTR, args.trials)
    log_created(result, url)

    specs = worker_specs(args.workers, gpus)
    if len(specs) == 1 and gpus is None:
        report = run_worker(
            name, url, args.data, None, args.timeout, prepared=data, restarted=restarted
        )
        if report.restart:
            started = restarted.started_at if restarted else _STARTED_AT
            restart_process(restart_state(report, started))
        code = report.exit_code
    else:
        log(f"starting {len(specs)} workers: {', '.join(s.label for s in specs)}")
        code = launch(specs, name, url, args.data, args.timeout, quiet=is_quiet())

    study, _ = open_study(name, url)
    print(f"\nTop trials of study {name!r} ({config.objective.metric}, validation split):")
    print(top_trials_table(study, config.objective.metric))
    from search.export import completed_trials, trial_config_of

    ranked = completed_trials(study)
    if ranked:
        best = ranked[0]
        print(
            f"\nBest configuration (trial {best.number}, {config.objective.metric} {best.value:.4f}):"
        )
        print(json.dumps(trial_config_of(best, config).to_dict(), indent=2))
    print("\nBrowse the study:")
    for command in dashboard_commands(url):
        print(f"  {command}")
    print(
        f"Export it:\n  tumor-search export --study {name} --storage {parsed.masked} --out best.json"
    )
    return code


# ---------------------------------------------------------------- status / export


def cmd_status(args: argparse.Namespace) -> int:
    from search.status import print_status, study_status

    status = study_status(args.study, args.storage)
    if args.json:
        json.dump(status, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_status(status)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search.export import export_best
    from search.outputs import check_writable_file

    out = check_writable_file(args.out)
    payload = export_best(args.study, args.storage, out, top=args.top)
    print(
        f"wrote {out}: trial {payload['trial']} of study {args.study!r}, "
        f"{payload['metric']} {payload['value']:.4f}"
    )
    return 0


# ---------------------------------------------------------------- train-best / predict


def cmd_train_best(args: argparse.Namespace) -> int:
    from search.train_best import train_best

    summary = train_best(
        args.config,
        args.data,
        args.out,
        seeds=args.seeds,
        storage_url=args.storage,
        record=not args.no_record,
    )
    test = summary["test"]
    print(
        f"test accuracy {test['accuracy']:.4f} on {summary['test_images']} held-out images", end=""
    )
    if len(summary["seeds"]) > 1:
        print(
            f" (mean {summary['test_accuracy_mean']:.4f} ± {summary['test_accuracy_std']:.4f} over {len(summary['seeds'])} seeds)"
        )
    else:
        print()
    for name, m in test["per_class"].items():
        print(
            f"  {name:<14} precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  ({m['support']} images)"
        )
    print(
        f"wrote {os.path.join(args.out, 'model.keras')} and {os.path.join(args.out, 'metrics.json')}"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from search.predict import predict_paths

    predictions = predict_paths(args.model, args.paths)
    if args.json:
        json.dump([p.__dict__ for p in predictions], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for p in predictions:
        probs = "  ".join(f"{name} {value:.3f}" for name, value in p.probabilities.items())
        print(f"{p.path}\t{p.label}\t{probs}")
    return 0


# ---------------------------------------------------------------- dashboard / report


def cmd_dashboard(args: argparse.Namespace) -> int:
    from search.dashboard import serve

    return serve(args.storage, args.host, args.port)


def cmd_report(args: argparse.Namespace) -> int:
    from search.outputs import check_writable_file
    from search.results.report import write_report

    out = check_writable_file(args.out)
    summary = write_report(args.study, args.storage, out)
    print(f"wrote {out}: {summary}")
    return 0


# ---------------------------------------------------------------- parsers


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "backbones",
        parents=[common],
        help="list the backbones a search space may use",
        description="List the registered backbones: family, default and minimum input size, "
        "pooled feature width and in-graph preprocessing.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=cmd_backbones)

    config_help = "study config: demo, kaggle, or a path to a YAML file (default demo)"

    p = sub.add_parser(
        "run",
        parents=[common],
        help="create (or resume) a study and run its trials",
        description="Create the study (or resume it), run workers until the trial budget is "
        "met, then print the top trials, the best configuration and how to open the dashboard.",
    )
    p.add_argument(
        "--config",
        help="study config: demo, kaggle, or a path to a YAML file (default: the existing "
        "study's own config, else demo)",
    )
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the config's name)")
    _add_storage(p)
    p.add_argument(
        "--trials",
        type=_positive_int,
        metavar="N",
        help="the study's trial budget (default: the config's)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="stop starting trials after S seconds (default: the config's timeout, if any)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes on this machine (default 1)",
    )
    group.add_argument(
        "--gpus", metavar="0,1,...", help="one worker per GPU, each with CUDA_VISIBLE_DEVICES set"
    )
    p.set_defaults(handler=cmd_run)

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
    _add_storage(p)
    p.add_argument("--config", default="demo", help=config_help)
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument(
        "--trials", type=_positive_int, metavar="N", help="trial budget (default: the config's)"
    )
    p.set_defaults(handler=cmd_study_create)

    p = sub.add_parser(
        "worker",
        parents=[common],
        help="run trials of an existing study",
        description="Run trials of an existing study until its budget, --trials or --timeout. "
        "Everything else comes from the study; the local data must match its fingerprint.",
    )
    _add_study(p)
    p.add_argument(
        "--trials", type=_positive_int, metavar="N", help="at most N trials from this worker"
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="start no trial after S seconds (default: the config's timeout, if any)",
    )
    p.add_argument(
        "--data", metavar="DIR", help="this machine's copy of the dataset (default: the config's)"
    )
    p.add_argument("--gpu", metavar="ID", help="use only this GPU (sets CUDA_VISIBLE_DEVICES)")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="trial counts, best value and running trials",
        description="Show a study's trials by state, its budget, the best trial, running trials and failures.",
    )
    _add_study(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "export",
        parents=[common],
        help="write the best configuration to best.json",
        description="Replay the best trial's parameters through the search space and write its "
        "configuration, the study config, its validation metrics, the data fingerprint and "
        "library versions (YAML when the name ends in .yaml).",
    )
    _add_study(p)
    p.add_argument(
        "--out", default="best.json", metavar="FILE", help="output file (default best.json)"
    )
    p.add_argument(
        "--top", type=_positive_int, default=1, metavar="K", help="also list the K best trials"
    )
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser(
        "train-best",
        parents=[common],
        help="retrain the exported configuration and test it once",
        description="Retrain the configuration in best.json on the train split (validation for "
        "early stopping), evaluate once on the held-out test split, write model.keras and "
        "metrics.json, and record the result on the study.",
    )
    p.add_argument("--config", required=True, metavar="best.json", help="file written by export")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument(
        "--out", default="runs/best", metavar="DIR", help="output folder (default runs/best)"
    )
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train N times with different seeds",
    )
    _add_storage(p)
    p.add_argument("--no-record", action="store_true", help="do not write the result to the study")
    p.set_defaults(handler=cmd_train_best)

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

    p = sub.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of a study",
        description="Write one HTML file (opens offline) with plotly figures of the study.",
    )
    _add_study(p)
    p.add_argument("--out", required=True, metavar="report.html", help="output file")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="serve optuna-dashboard for a storage",
        description="Serve optuna-dashboard on the storage (binds 127.0.0.1 unless --host is given).",
    )
    _add_storage(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    p.set_defaults(handler=cmd_dashboard)

