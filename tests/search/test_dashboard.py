"""optuna-dashboard as a real server on a free loopback port, read through its JSON API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import optuna

from tests.conftest import ROOT, assert_bad_input, run_cli
from tests.search.conftest import TinyStudy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_dashboard_serves_the_study_and_its_learning_curves(tiny_study: TinyStudy) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search",
            "dashboard",
            "--storage",
            tiny_study.storage,
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        studies = None
        while time.monotonic() < deadline:
            try:
                studies = _get(f"{base}/api/studies")
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.5)
        assert studies is not None, "dashboard did not answer"
        entry = next(s for s in studies["study_summaries"] if s["study_name"] == "tiny")
        detail = _get(f"{base}/api/studies/{entry['study_id']}")
        study = optuna.load_study(study_name="tiny", storage=tiny_study.storage)
        assert len(detail["trials"]) == len(study.trials) == 3
        for served, stored in zip(
            sorted(detail["trials"], key=lambda t: t["number"]), study.trials, strict=True
        ):
            assert served["state"] == "Complete"
            assert [v["value"] for v in served["intermediate_values"]] == [
                stored.intermediate_values[k] for k in sorted(stored.intermediate_values)
            ]
        assert detail["objective_names"] == ["val_accuracy"]
        assert "Objective" in detail["note"]["body"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_refuses_a_missing_database_and_a_busy_port(tmp_path) -> None:
    assert_bad_input(
        run_cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}"), "no study database"
    )
    assert not (tmp_path / "none.db").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = tmp_path / "s.db"
        optuna.create_study(storage=f"sqlite:///{db}")
        assert_bad_input(
            run_cli("dashboard", "--storage", f"sqlite:///{db}", "--port", str(port)), "in use"
        )
