"""SQLite under four workers with the dashboard reading, and the security defaults."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.cli import build_parser
from tests.conftest import ROOT, run_cli, start_cli
from tests.search.helpers import create_tiny_study, trials_of

# Straight to the loopback server: a proxy set in the environment must not carry the request.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_sqlite_workers_while_the_dashboard_reads(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'busy.db'}"
    create_tiny_study(
        tmp_path,
        tiny_data,
        storage,
        "busy",
        trials=8,
        training={"epochs": 1, "early_stopping_patience": 0},
        pruner={"name": "none"},  # all 8 must complete, whatever the median pruner would say
    )
    port = _free_port()
    dashboard = start_cli("dashboard", "--storage", storage, "--port", str(port))
    workers = [
        start_cli("worker", "--study", "busy", "--storage", storage, "--data", str(tiny_data))
        for _ in range(4)
    ]
    reads = 0
    try:
        study_id = optuna.load_study(study_name="busy", storage=storage)._study_id
        while any(w.poll() is None for w in workers):
            try:
                with _DIRECT.open(
                    f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10
                ) as r:
                    json.loads(r.read())
                    reads += 1
            except OSError:
                pass
            time.sleep(0.2)
        outputs = [w.communicate(timeout=60) for w in workers]
    finally:
        dashboard.terminate()
        _, dash_err = dashboard.communicate(timeout=30)
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "database is locked" not in err
    assert "database is locked" not in dash_err
    assert reads > 5
    trials = trials_of(storage, "busy")
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)


def test_dashboard_binds_loopback_unless_told_otherwise() -> None:
    args = build_parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"


def test_no_credentials_in_the_repository() -> None:
    import re

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert ".env" not in tracked
    # A URL with a literal password; ${...} interpolation and placeholders are fine.
    url_with_password = re.compile(r"://[^/\s:@]+:(?!\$\{|\*\*\*|PASSWORD@|password@)[^@\s/]+@")
    offenders = []
    for name in tracked:
        path = ROOT / name
        # Tests hold made-up passwords on purpose, to check that they are masked.
        if name.startswith("tests/") or path.suffix in (".png", ".jpg", ".h5", ".keras"):
            continue
        if path.is_file():
            text = path.read_text(errors="ignore")
            offenders += [f"{name}: {m.group(0)}" for m in url_with_password.finditer(text)]
    assert offenders == []


def test_passwords_never_appear_in_status_logs_errors_or_exports(
    tmp_path: Path, tiny_data: Path, pg_url: str
) -> None:
    """PostgreSQL here trusts local users, so a URL with a made-up password still connects."""
    secret_url = pg_url.replace("postgres@", "postgres:s3cretpass@", 1)
    assert "s3cretpass" in secret_url
    name = f"secret-{time.time_ns()}"
    try:
        create_tiny_study(tmp_path, tiny_data, secret_url, name, trials=1, training={"epochs": 1})
        run = run_cli("worker", "--study", name, "--storage", secret_url, "--data", str(tiny_data))
        status = run_cli("status", "--study", name, "--storage", secret_url, "--json")
        best = tmp_path / "best.json"
        export = run_cli("export", "--study", name, "--storage", secret_url, "--out", str(best))
        missing = run_cli("status", "--study", "not-there", "--storage", secret_url)
        for result in (run, status, export, missing):
            assert "s3cretpass" not in result.stdout + result.stderr
        assert run.returncode == 0 and status.returncode == 0 and export.returncode == 0
        assert (
            "s3cretpass" not in best.read_text()
            and "***" in json.loads(best.read_text())["storage"]
        )
        assert missing.returncode == 2
    finally:
        if name in optuna.get_all_study_names(pg_url):
            optuna.delete_study(study_name=name, storage=pg_url)
