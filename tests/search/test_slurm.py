"""`slurm submit` on a real single-node Slurm cluster (deploy/slurm/test-cluster.sh).

The cluster is started by the `slurm` fixture (installing Debian's slurm-wlm and munge where
$TUMOR_SEARCH_TEST_SLURM asks for it, as `.ci/run` does); without it these tests are skipped,
and with $TUMOR_SEARCH_TEST_SLURM set they fail. Trials are slowed by a test-only pause after
each epoch, and the tiny config's heartbeat is short (1 s, grace 3 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from search.runtime.claim import WORKER_ATTR
from tests.conftest import ROOT, run_cli
from tests.search.helpers import create_tiny_study, trials_of, wait_for

# A real Slurm cluster: `make test-all` (CI) runs these.
pytestmark = pytest.mark.slow

SLURM_ENV = "TUMOR_SEARCH_TEST_SLURM"
CLUSTER = ROOT / "deploy" / "slurm" / "test-cluster.sh"
SLOW = {"TUMOR_SEARCH_TEST_PAUSE": "epoch-end:1"}
LONG = {"training": {"epochs": 6, "early_stopping_patience": 0}, "pruner": {"name": "none"}}


def _unavailable(reason: str) -> None:
    if os.environ.get(SLURM_ENV):
        pytest.fail(f"{SLURM_ENV} is set, but the test Slurm cluster cannot run: {reason}")
    pytest.skip(f"no test Slurm cluster here: {reason}")


def _up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    return "UP" in ping.stdout


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """A running single-node cluster: started (and installed) when $TUMOR_SEARCH_TEST_SLURM
    is set, else used only if it already answers; stopped again if this session started it."""
    started = False
    if os.environ.get(SLURM_ENV) and not _up():
        if os.geteuid() != 0:
            _unavailable("starting it needs root")
        result = subprocess.run(
            ["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0:
            _unavailable(f"{CLUSTER.name} start failed: {result.stderr.strip()[-800:]}")
        started = True
    if not _up():
        _unavailable("no Slurm controller answers (scontrol ping)")
    yield
    # Under pytest-xdist each worker is a session: the one that started the cluster must not
    # stop it under another worker's Slurm test (it did on 2026-12-05), so it stays up there.
    if started and not os.environ.get("PYTEST_XDIST_WORKER"):
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=120)


def _submit(study: str, storage: str, data: Path, logs: Path, *extra: str) -> str:
    result = run_cli(
        "slurm", "submit", "--study", study, "--storage", storage, "--data", str(data),
        "--cpus-per-task", "1", "--log-dir", str(logs), *extra,
        env=SLOW,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _queued(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout
    return bool(out.strip())


def _logs(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(logs.glob("*.log")))


def _running_task(storage: str, study: str, task: str) -> bool:
    return any(
        t.state == TrialState.RUNNING
        and t.intermediate_values
        and t.user_attrs.get(WORKER_ATTR, {}).get("slurm_task") == task
        for t in trials_of(storage, study)
    )


def test_dry_run_prints_the_batch_script_without_credentials(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://alice:topsecret@db:5432/optuna"
    result = run_cli(
        "slurm", "submit", "--study", "s", "--storage", url, "--data", str(tmp_path),
        "--workers", "3", "--gres", "gpu:1", "--time", "01:30", "--partition", "long",
        "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("#SBATCH --array=0-2", "#SBATCH --gres=gpu:1", "#SBATCH --time=01:30:00"):
        assert line in script
    assert "#SBATCH --partition=long" in script and "#SBATCH --signal=B:TERM@60" in script
    assert f"exec {shlex_path()} -m search worker --study s --data {tmp_path}" in script
    assert "topsecret" not in script and "alice" not in script
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def shlex_path() -> str:
    import shlex
    import sys

    return shlex.quote(sys.executable)


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [("--time", "90", "--time takes"), ("--gres", "gpu 1", "--gres takes")],
)
def test_malformed_options_exit_2(tmp_path: Path, option: str, value: str, fragment: str) -> None:
    args = ("slurm", "submit", "--study", "s", "--data", str(tmp_path), option, value, "--dry-run")
    result = run_cli(*args)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr


def test_two_array_tasks_meet_the_budget_with_trials_from_both(
    slurm: None, pg_url: str, tmp_path: Path, tiny_data: Path
) -> None:
    study = f"slurm-budget-{os.getpid()}-{time.time_ns()}"
    create_tiny_study(tmp_path, tiny_data, pg_url, study, trials=4, **LONG)
    logs = tmp_path / "logs"
    job = _submit(study, pg_url, tiny_data, logs, "--workers", "2", "--gres", "gpu:1")
    wait_for(lambda: _running_task(pg_url, study, f"{job}_1"), timeout=180, what=_logs(logs))
    status = run_cli("status", "--study", study, "--storage", pg_url)
    assert f"slurm:    job {job} (2 workers): " in status.stdout, status.stdout
    assert "RUNNING" in status.stdout
    wait_for(lambda: not _queued(job), timeout=300, what="the array job to end")
    trials = trials_of(pg_url, study)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, _logs(logs)
    tasks = {t.user_attrs[WORKER_ATTR]["slurm_task"] for t in trials}
    assert tasks == {f"{job}_0", f"{job}_1"}
    assert "no longer queued" in run_cli("status", "--study", study, "--storage", pg_url).stdout
    assert "[task 0] " in _logs(logs) and "[task 1] " in _logs(logs)


@pytest.mark.parametrize("kill", [True, False], ids=["SIGKILL", "SIGTERM"])
def test_a_cancelled_task_leaves_its_trial_to_the_other(
    slurm: None, pg_url: str, tmp_path: Path, tiny_data: Path, kill: bool
) -> None:
    study = f"slurm-cancel-{os.getpid()}-{time.time_ns()}"
    create_tiny_study(tmp_path, tiny_data, pg_url, study, trials=2, **LONG)
    logs = tmp_path / "logs"
    job = _submit(study, pg_url, tiny_data, logs, "--workers", "2")
    victim_task = f"{job}_0"
    wait_for(lambda: _running_task(pg_url, study, victim_task), timeout=180, what=_logs(logs))
    victim = next(
        t.number
        for t in trials_of(pg_url, study)
        if t.state == TrialState.RUNNING
        and t.user_attrs[WORKER_ATTR].get("slurm_task") == victim_task
    )
    signal_args = ["--signal=KILL", "--batch"] if kill else []
    subprocess.run(["scancel", *signal_args, victim_task], check=True, timeout=60)
    wait_for(lambda: not _queued(job), timeout=300, what="the array job to end")
    trials = {t.number: t for t in trials_of(pg_url, study)}
    assert trials[victim].state == TrialState.FAIL, _logs(logs)
    reason = trials[victim].user_attrs.get("fail_reason", "")
    # SIGTERM takes the clean path (failed and requeued at once); SIGKILL leaves it to
    # the heartbeat of the other task's worker.
    assert (reason == "interrupted by SIGTERM") is (not kill), reason
    retry = next(t for t in trials.values() if t.system_attrs.get("failed_trial") == victim)
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs[WORKER_ATTR]["slurm_task"] == f"{job}_1"
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 2


def test_a_bad_partition_exits_2_with_one_line(
    slurm: None, tmp_path: Path, tiny_data: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    create_tiny_study(tmp_path, tiny_data, storage, "p")
    result = run_cli(
        "slurm", "submit", "--study", "p", "--storage", storage, "--data", str(tiny_data),
        "--partition", "no_such_partition", "--log-dir", str(tmp_path / "logs"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr_lines) == 1 and "partition" in result.stderr.lower(), result.stderr


def test_an_unreachable_controller_exits_2_with_one_line(
    slurm: None, tmp_path: Path, tiny_data: Path
) -> None:
    """The cluster's own config with the controller's port moved to a closed one."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    text = conf.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("SlurmctldPort=")]
    (tmp_path / "slurm.conf").write_text("\n".join([*lines, "SlurmctldPort=1", ""]))
    for extra in conf.parent.glob("gres.conf"):
        shutil.copy(extra, tmp_path / extra.name)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    create_tiny_study(tmp_path, tiny_data, storage, "u")
    result = run_cli(
        "slurm", "submit", "--study", "u", "--storage", storage, "--data", str(tiny_data),
        "--log-dir", str(tmp_path / "logs"),
        env={"SLURM_CONF": str(tmp_path / "slurm.conf")},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    assert "unable to contact slurm controller" in result.stderr.lower(), result.stderr
