"""`tumor-search slurm submit`: a study's workers as one Slurm array job."""

from __future__ import annotations

import argparse

from common.progress import log
from search.cli.args import add_storage_retry, add_study, positive_int


def cmd_slurm_submit(args: argparse.Namespace) -> int:
    from search.runtime.slurm import SLURM_ATTR, SlurmRequest, batch_script, job_record, submit
    from search.runtime.storage import parse_url, resolve_url

    request = SlurmRequest(
        study=args.study,
        data=args.data,
        workers=args.workers,
        partition=args.partition,
        gres=args.gres,
        time=args.time,
        cpus_per_task=args.cpus_per_task,
        log_dir=args.log_dir,
        storage_retry=args.storage_retry,
    )
    request.check()
    if args.dry_run:
        print(batch_script(request), end="")
        return 0
    from search.runtime.study import open_study

    url = resolve_url(args.storage)
    parsed = parse_url(url)
    study, _ = open_study(args.study, url)  # the study must exist before its workers
    job_id = submit(request, url)
    if parsed.sqlite_path is not None:
        log(f"note: SQLite ({parsed.sqlite_path}) serves only workers that share this filesystem")
    jobs = [*study.user_attrs.get(SLURM_ATTR, []), job_record(job_id, request)]
    study.set_user_attr(SLURM_ATTR, jobs)
    log(
        f"submitted Slurm array job {job_id}: {args.workers} workers of study {args.study!r}, "
        f"logs in {jobs[-1]['log_dir']}; follow it with: tumor-search status --study {args.study}"
    )
    print(job_id)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    slurm = sub.add_parser(
        "slurm",
        help="run a study's workers on a Slurm cluster",
        description="Run a study's workers on a Slurm cluster.",
    )
    slurm_sub = slurm.add_subparsers(dest="slurm_command", metavar="{submit}", required=True)
    p = slurm_sub.add_parser(
        "submit",
        parents=[common],
        help="submit one array job with one worker per array task",
        description="Submit one Slurm array job with one worker per array task (sbatch). The "
        "study must exist (study create); the storage URL reaches the tasks in their "
        "environment, never in the batch script. `status` shows each task's state.",
    )
    add_study(p)
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset as the nodes see it")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N", help="array tasks")
    p.add_argument("--partition", metavar="P", help="Slurm partition (default: the cluster's)")
    p.add_argument("--gres", metavar="SPEC", help="generic resources per task, e.g. gpu:1")
    p.add_argument("--time", metavar="HH:MM", help="time limit per task (default: the partition's)")
    p.add_argument(
        "--cpus-per-task", type=positive_int, default=4, metavar="C", help="CPUs per task (4)"
    )
    p.add_argument(
        "--log-dir", default="slurm-logs", metavar="DIR", help="task logs (default slurm-logs)"
    )
    add_storage_retry(p, "the workers' --storage-retry (default: the study's retry_seconds)")
    p.add_argument("--dry-run", action="store_true", help="print the batch script, submit nothing")
    p.set_defaults(handler=cmd_slurm_submit)
