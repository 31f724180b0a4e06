"""Every command against the real PostgreSQL server ($TUMOR_SEARCH_TEST_POSTGRES)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.conftest import run_cli
from tests.search.helpers import write_config


def test_every_command_works_on_postgres(tmp_path: Path, tiny_data: Path, pg_url: str) -> None:
    name = f"pg-{time.time_ns()}"
    # No pruner: both trials must complete (the median pruner could stop the second).
    config = write_config(
        tmp_path / "c.yaml", trials=2, training={"epochs": 2}, pruner={"name": "none"}
    )
    storage = ("--storage", pg_url)
    try:
        created = run_cli(
            "study",
            "create",
            "--study",
            name,
            "--config",
            str(config),
            "--data",
            str(tiny_data),
            *storage,
        )
        assert created.returncode == 0, created.stderr
        worker = run_cli(
            "worker", "--study", name, "--data", str(tiny_data), "--trials", "1", *storage
        )
        assert worker.returncode == 0, worker.stderr
        run = run_cli(
            "run", "--study", name, "--config", str(config), "--data", str(tiny_data), *storage
        )
        assert run.returncode == 0, run.stderr
        assert "resuming study" in run.stderr
        status = json.loads(run_cli("status", "--study", name, "--json", *storage).stdout)
        assert status["counts"]["complete"] == 2 and status["budget_used"] == 2
        best = tmp_path / "best.json"
        assert run_cli("export", "--study", name, "--out", str(best), *storage).returncode == 0
        trained = run_cli(
            "train-best",
            "--config",
            str(best),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "m"),
            *storage,
        )
        assert trained.returncode == 0, trained.stderr
        study = optuna.load_study(study_name=name, storage=pg_url)
        assert "train_best" in study.user_attrs
        assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
        report = run_cli("report", "--study", name, "--out", str(tmp_path / "r.html"), *storage)
        assert report.returncode == 0, report.stderr
    finally:
        if name in optuna.get_all_study_names(pg_url):
            optuna.delete_study(study_name=name, storage=pg_url)


def test_dashboard_serves_a_postgres_storage(tmp_path: Path, tiny_data: Path, pg_url: str) -> None:
    import socket
    import urllib.request

    from tests.conftest import start_cli
    from tests.search.helpers import create_tiny_study, wait_for

    name = f"pgdash-{time.time_ns()}"
    try:
        create_tiny_study(tmp_path, tiny_data, pg_url, name, trials=1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start_cli("dashboard", "--storage", pg_url, "--port", str(port))
        found: list[str] = []

        def listed() -> bool:
            try:
                # Straight to the loopback server, never through a proxy from the environment.
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with direct.open(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    found[:] = [s["study_name"] for s in json.loads(r.read())["study_summaries"]]
                    return True
            except OSError:
                return False

        try:
            wait_for(listed, timeout=60, what="the dashboard")
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        assert name in found
    finally:
        if name in optuna.get_all_study_names(pg_url):
            optuna.delete_study(study_name=name, storage=pg_url)
