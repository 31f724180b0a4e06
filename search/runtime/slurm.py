"""Workers as one Slurm array job: the batch script, `sbatch`, and the tasks' states.

A generated batch script, submitted with plain `sbatch` (no Python package between the
worker and Slurm): one array task runs one worker, started with ``exec`` so that the
SIGTERM Slurm sends on ``scancel`` or before the time limit reaches the worker itself,
which fails its trial and queues it again. The storage URL travels in the job's
environment (``--export=ALL``, Slurm's default), not in the script; slurmctld keeps both,
so a URL without a password (and ~/.pgpass on the nodes) keeps the password out of Slurm.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import InputError, one_line

SLURM_ATTR = "slurm_job"  # study user attribute: the array job that runs its workers
STOP_BEFORE_LIMIT_S = 60  # SIGTERM this long before the time limit: the trial is requeued
_TIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
_NAME = re.compile(r"^[A-Za-z0-9._,-]+$")
_GRES = re.compile(r"^[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?(:\d+)?$")


@dataclass(frozen=True)
class SlurmRequest:
    """What `slurm submit` asks of Slurm for one study."""

    study: str
    data: str
    workers: int
    partition: str | None = None
    gres: str | None = None
    time: str | None = None
    cpus_per_task: int = 1
    log_dir: str = "slurm-logs"
    storage_retry: float | None = None

    def check(self) -> None:
        """Raises InputError for a value sbatch would refuse less clearly."""
        if self.time is not None and not _TIME.match(self.time):
            raise InputError(f"--time takes HH:MM, HH:MM:SS or D-HH:MM; got {self.time!r}")
        if self.gres is not None and not _GRES.match(self.gres):
            raise InputError(f"--gres takes NAME[:TYPE][:COUNT] such as gpu:1; got {self.gres!r}")
        if self.partition is not None and not _NAME.match(self.partition):
            raise InputError(
                f"--partition takes partition names such as gpu; got {self.partition!r}"
            )
        if re.search(r"\s", str(Path(self.log_dir).resolve())):
            raise InputError(
                f"--log-dir must not contain spaces (an #SBATCH line): {self.log_dir!r}"
            )
        if not Path(self.data).is_dir():
            raise InputError(f"data folder {self.data} does not exist")


def slurm_time(text: str) -> str:
    """``HH:MM`` as Slurm reads it (alone, Slurm takes ``A:B`` for minutes:seconds)."""
    return f"{text}:00" if "-" not in text and text.count(":") == 1 else text


def batch_script(request: SlurmRequest, python: str = sys.executable) -> str:
    """The batch script of the array job (no credentials: see the module docstring)."""
    r = request
    options = [
        f"--job-name=tumor-search-{re.sub(r'[^A-Za-z0-9._-]', '_', r.study)}",
        f"--array=0-{r.workers - 1}",
        "--ntasks=1",
        f"--cpus-per-task={r.cpus_per_task}",
        f"--output={Path(r.log_dir).resolve()}/%x-%A_%a.log",
        f"--signal=B:TERM@{STOP_BEFORE_LIMIT_S}",
    ]
    options += [f"--partition={r.partition}"] if r.partition else []
    options += [f"--gres={r.gres}"] if r.gres else []
    options += [f"--time={slurm_time(r.time)}"] if r.time else []
    data = str(Path(r.data).resolve())
    worker = [python, "-m", "search", "worker", "--study", r.study, "--data", data]
    if r.storage_retry is not None:
        worker += ["--storage-retry", f"{r.storage_retry:g}"]
    lines = [
        "#!/bin/bash",
        f"# tumor-search worker array for study {r.study!r}: one worker per array task.",
        *(f"#SBATCH {option}" for option in options),
        "",
        "# The storage URL comes from the environment sbatch was called in (TUMOR_SEARCH_STORAGE).",
        ': "${TUMOR_SEARCH_STORAGE:?set TUMOR_SEARCH_STORAGE to the study storage URL}"',
        "# exec: Slurm's SIGTERM (scancel, or the time limit near) reaches the worker itself.",
        "exec " + shlex.join(worker),
        "",
    ]
    return "\n".join(lines)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InputError(
            f"{name} not found: run this on a Slurm login node (Slurm's tools on PATH)"
        )
    return path


def submit(request: SlurmRequest, storage_url: str) -> str:
    """`sbatch` the array job; its job id.

    Raises:
        InputError: sbatch is missing or refuses the job (a bad partition, an unreachable
            controller): its own message in one line.
    """
    Path(request.log_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TUMOR_SEARCH_STORAGE": storage_url}
    result = subprocess.run(
        [_tool("sbatch"), "--parsable"],
        input=batch_script(request),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        message = lines[-1].removeprefix("sbatch: error: ") if lines else "no message"
        raise InputError(f"sbatch refused the job: {one_line(message)}")
    return result.stdout.strip().split(";")[0]


def job_record(job_id: str, request: SlurmRequest) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "workers": request.workers,
        "submitted": dt.datetime.now().isoformat(timespec="seconds"),
        "log_dir": str(Path(request.log_dir).resolve()),
    }


def task_states(job_id: str) -> dict[str, str] | None:
    """Each array task's state as `squeue` knows it (``{"0": "RUNNING", "1-3": "PENDING"}``);
    empty once the job left the queue; None where squeue cannot be asked (not a Slurm
    node, or the controller unreachable)."""
    path = shutil.which("squeue")
    if path is None:
        return None
    try:
        result = subprocess.run(
            [path, "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        # A job that left the queue: "Invalid job id specified".
        return {} if "invalid job id" in result.stderr.lower() else None
    states = {}
    for line in result.stdout.splitlines():
        task, _, state = line.strip().partition(" ")
        states[task.split("_", 1)[-1].strip("[]")] = state
    return states
