"""`tumor-search run`: create (or resume) a study, run its workers, show the best trials."""

from __future__ import annotations

import argparse
import json
from typing import Any

from common.progress import is_quiet, log
from search.cli.args import (
    add_artifacts,
    add_download_weights,
    add_storage,
    add_storage_retry,
    apply_storage_retry,
    positive_float,
    positive_int,
    warn_dropped,
    warn_small_validation,
)
from search.errors import InputError


def _stored_config(url: str, name: str) -> Any:
    """The config stored in study `name`, or None when there is no such study yet."""
    from search.runtime.storage import has_tables, open_storage
    from search.runtime.study import load_study, study_config, study_exists

    if not has_tables(url):
        return None
    storage = open_storage(url)
    if not study_exists(storage, name):
        return None
    return study_config(load_study(name, storage))


def cmd_run(args: argparse.Namespace) -> int:
    from search.runtime.launcher import parse_gpus
    from search.runtime.restart import RestartState
    from search.runtime.storage import parse_url, resolve_url

    apply_storage_retry(args)
    restarted = RestartState.take_from_environment()
    gpus = parse_gpus(args.gpus) if args.gpus else None
    url = resolve_url(args.storage)
    parsed = parse_url(url)
    config, data, name = _create_or_resume(args, url)
    timeout = args.timeout if args.timeout is not None else config.timeout
    finalizing = args.finalize and not config.objective.is_multi
    code = _run_workers(args, name, url, data, gpus, restarted, timeout, finalizing)
    if code == 0 and finalizing:
        # --timeout counts from the first process's start (a worker restarted for memory
        # replaced this process and carried its start over).
        started = restarted.started_at if restarted else args.started_at
        _finalize(args, name, url, config, data, timeout, started)
    _print_summary(name, url, parsed.masked, config)
    return code


def _finalize(
    args: argparse.Namespace,
    name: str,
    url: str,
    config: Any,
    data: Any,
    timeout: float | None,
    started: float,
) -> None:
    """Re-score the best trials by cross-validation (`finalize`), sized to what is left of
    `timeout`; one line saying why not when it is skipped."""
    import time

    from search.results.finalize import finalize, finalized_best, table
    from search.runtime.study import open_study
    from search.runtime.time_plan import (
        DEFAULT_FOLDS,
        DEFAULT_TOP,
        MAX_TOP,
        completed_durations,
        finalize_plan,
        plan_for,
    )

    study, _ = open_study(name, url)
    if finalized_best(study):
        log("finalize: the study's best trial is already among its finalists; not run again")
        return
    ranked = completed_durations(study)
    if len(ranked) < 2:
        log(f"finalize skipped: {len(ranked)} completed trial, nothing to choose between")
        return
    val_fraction = config.data.val_fraction
    if timeout is None:
        plan = plan_for(DEFAULT_TOP, DEFAULT_FOLDS, ranked, val_fraction)
    else:
        left = timeout - (time.time() - started)
        plan = finalize_plan(left, ranked, val_fraction)
        if plan is None:
            log(
                f"finalize skipped: {max(left, 0):.0f}s left of --timeout {timeout:g}s, too "
                f"little to cross-validate 2 trials; later: tumor-search finalize --study {name}"
            )
            return
    # With a --timeout, finalize goes on past the plan's finalists (up to MAX_TOP) while the
    # next one's folds, paced by those already scored, still end in time.
    top = plan.top if timeout is None else max(plan.top, min(MAX_TOP, len(ranked)))
    more = f", more (up to {top}) if time allows" if top > plan.top else ""
    log(
        f"finalize: re-scoring the top {plan.top} trials by {plan.folds}-fold cross-validation"
        f"{more} (about {plan.seconds:.0f}s; --no-finalize skips it)"
    )
    try:
        deadline = None if timeout is None else started + timeout
        summary = finalize(name, url, args.data, top, plan.folds, prepared=data, deadline=deadline)
    except InputError as exc:
        log(f"finalize skipped: {exc}")
        return
    print(f"\nFinalists of study {name!r} ({summary['folds']}-fold CV, * the winner):")
    print(table(summary))


def _create_or_resume(args: argparse.Namespace, url: str) -> tuple[Any, Any, str]:
    """The study's config, its data on this machine, and its name; the study exists after."""
    from search.config import load_config
    from search.runtime.study import BUDGET_ATTR, create_study, log_created
    from search.study_data import prepare
    from search.training.weights import ensure_weights

    # Without --config an existing study resumes with its own config (a second machine
    # needs only --study and --storage); a new one gets the demo config.
    stored = None if args.config else _stored_config(url, args.study or load_config("demo").name)
    config = (stored or load_config(args.config or "demo")).with_overrides(
        data_path=args.data, trials=args.trials
    )
    name = args.study or config.name
    data = prepare(config, args.data)
    warn_dropped(data)
    # Nothing is written to the storage until the data and the weights are known to be good;
    # a resumed study's worker needs its weights too.
    ensure_weights(config, download=args.download_weights)
    result = create_study(name, url, config, data, args.artifacts)
    if not result.created and args.trials is not None:
        result.study.set_user_attr(BUDGET_ATTR, args.trials)
    log_created(result, url)
    warn_small_validation(data)
    return config, data, name


def _run_workers(
    args: argparse.Namespace,
    name: str,
    url: str,
    data: Any,
    gpus: list[str] | None,
    restarted: Any,
    timeout: float | None,
    finalizing: bool,
) -> int:
    """One worker in this process, or one worker process per GPU (or per --workers); with a
    timeout and `finalizing`, they stop searching early enough for finalize to fit."""
    from search.results.status import progress_line
    from search.runtime.launcher import launch, worker_specs
    from search.runtime.worker import run_here

    specs = worker_specs(args.workers, gpus)
    if len(specs) == 1 and gpus is None:
        report = run_here(
            name, url, args.data, None, timeout, restarted, args.started_at, prepared=data,
            leave_for_finalize=finalizing, progress=progress_line,
        )  # fmt: skip
        return report.exit_code
    log(f"starting {len(specs)} workers: {', '.join(s.label for s in specs)}")
    return launch(
        specs, name, url, args.data, timeout, quiet=is_quiet(), leave_for_finalize=finalizing
    )


def _print_summary(name: str, url: str, masked: str, config: Any) -> None:
    """The top trials, the best configuration and how to browse and export the study."""
    from search.results.export import select_trial, trial_config_of
    from search.results.status import dashboard_commands, top_trials_table
    from search.runtime.study import open_study

    study, _ = open_study(name, url)
    goal = config.objective
    if goal.is_multi:
        print(f"\nPareto front of study {name!r} ({', '.join(goal.names)}, validation split):")
        print(top_trials_table(study, goal.metric))
    else:
        print(f"\nTop trials of study {name!r} ({goal.metric}, validation split):")
        print(top_trials_table(study, goal.metric))
        try:  # a trial that breaks a constraint is never best
            best, rule = select_trial(study, goal.metric)
        except InputError:
            best = None
        if best is not None:
            print(
                f"\nBest configuration (trial {best.number}, {goal.metric} {best.value:.4f} on the "
                f"validation split; chosen by {rule}):"
            )
            print(json.dumps(trial_config_of(best, config).to_dict(), indent=2))
    print("\nBrowse the study:")
    for command in dashboard_commands(url):
        print(f"  {command}")
    export = f"tumor-search export --study {name} --storage {masked}"
    if goal.is_multi:
        print(f"Export one trial of the front:\n  {export} --pareto\n  {export} --trial N")
    else:
        print(f"Export it:\n  {export} --out best.json")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="create (or resume) a study and run its trials",
        description="Create the study (or resume it), run workers until the trial budget is "
        "met (or --timeout), re-score the best trials by cross-validation (finalize; "
        "single-objective studies, unless --no-finalize), then print the top trials, the chosen "
        "configuration and how to open the dashboard.",
    )
    p.add_argument(
        "--config",
        help="study config: demo, demo-pareto, kaggle, or a path to a YAML file (default: the existing "
        "study's own config, else demo)",
    )
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the config's name)")
    add_storage(p)
    p.add_argument(
        "--trials",
        type=positive_int,
        metavar="N",
        help="the study's trial budget (default: the config's)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="stop starting trials after S seconds (default: the config's timeout, if any)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes on this machine (default 1)",
    )
    group.add_argument(
        "--gpus", metavar="0,1,...", help="one worker per GPU, each with CUDA_VISIBLE_DEVICES set"
    )
    p.add_argument(
        "--no-finalize",
        dest="finalize",
        action="store_false",
        help="end without finalize (by default a single-objective run ends by re-scoring its "
        "best trials with cross-validation, within --timeout when one is set, so that export "
        "picks by the mean fold score and train-best refits on train+val)",
    )
    add_download_weights(p)
    add_artifacts(p)
    add_storage_retry(p)
    p.set_defaults(handler=cmd_run)
