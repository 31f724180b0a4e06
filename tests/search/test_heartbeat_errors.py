"""A heartbeat the storage refuses is logged once per distinct error, counted on the trial
and shown by `status`, instead of vanishing silently."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import optuna
import pytest

from search.config import load_config
from search.results.status import print_status, study_status
from search.runtime.optuna_compat import HEARTBEAT_MISSED_ATTR, Heartbeat
from search.runtime.study import create_study
from search.study_data import prepare
from tests.search.helpers import write_config


def test_refused_beats_are_logged_once_counted_and_shown(
    tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(str(write_config(tmp_path / "c.yaml"))).with_overrides(
        data_path=str(tiny_data)
    )
    db = tmp_path / "hb.db"
    storage = f"sqlite:///{db}"
    create_study("hb", storage, config, prepare(config))
    study = optuna.load_study(study_name="hb", storage=storage)
    trial = study.ask()
    with sqlite3.connect(db) as conn:  # the storage now refuses every beat, as a broken one
        conn.execute("DROP TABLE trial_heartbeats")
    capsys.readouterr()
    with Heartbeat(study, trial, interval=1) as beat:
        deadline = time.monotonic() + 30
        while beat.missed < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert beat.missed >= 3
    lines = [line for line in capsys.readouterr().err.splitlines() if "heartbeat" in line]
    assert len(lines) == 1, lines  # the same error, logged once
    assert lines[0].startswith(f"[trial {trial.number}] heartbeat not recorded (")
    assert "trial_heartbeats" in lines[0]
    stored = optuna.load_study(study_name="hb", storage=storage).trials[trial.number]
    assert stored.user_attrs[HEARTBEAT_MISSED_ATTR] == beat.missed
    status = study_status("hb", storage)
    assert status["heartbeats_missed"] == {"beats": beat.missed, "trials": 1}
    print_status(status)
    shown = capsys.readouterr().out
    assert f"heartbeat: {beat.missed} beats not recorded in 1 trials" in shown
