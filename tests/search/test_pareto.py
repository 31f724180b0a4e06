"""Multi-objective studies (``objective.metrics``): accuracy against latency, a Pareto front
instead of one best trial, no pruning."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.config import load_config
from search.errors import ConfigError
from tests.conftest import assert_bad_input, run_cli
from tests.search.helpers import (
    create_cli,
    dashboard_study,
    serve_dashboard,
    trials_of,
    write_config,
)

MULTI = {"metrics": ["val_accuracy", "latency_ms"]}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"objective": {"metrics": ["val_accuracy", "speed"]}}, "unknown metric 'speed'"),
        ({"objective": {"metric": "speed"}}, "unknown metric 'speed'"),
        ({"objective": {"metrics": ["val_accuracy"]}}, "needs two or more metrics"),
        ({"objective": {"metrics": ["latency_ms", "params_m"]}}, "needs a validation metric"),
        ({"objective": {"metrics": ["macro_f1", "macro_f1"]}}, "listed twice"),
        ({"objective": {"metric": "val_loss", **MULTI}}, "not both"),
        ({"objective": {"metric": "val_accuracy", "metrics": ["val_loss", "size_mb"]}}, "not both"),
        ({"objective": {"metrics": [["val_accuracy"], "latency_ms"]}}, "expected metric names"),
        ({"objective": MULTI}, "pruner: a multi-objective study cannot prune"),
        ({"objective": MULTI, "sampler": {"name": "moead"}}, "unknown sampler 'moead'"),
    ],
)
def test_bad_objectives_are_refused(tmp_path: Path, changes: dict, fragment: str) -> None:
    path = write_config(tmp_path / "c.yaml", **changes)  # TINY_CONFIG has a median pruner
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert fragment in str(err.value)


def test_multi_objective_config(tmp_path: Path) -> None:
    """No pruner section: nothing is pruned. The first validation metric picks the epoch."""
    path = write_config(
        tmp_path / "c.yaml", objective={"metrics": ["latency_ms", "macro_f1"]}, pruner=None
    )
    goal = load_config(str(path)).objective
    assert goal.is_multi and goal.names == ["latency_ms", "macro_f1"]
    assert goal.directions == ["minimize", "maximize"]
    assert (goal.metric, goal.monitor, goal.needs_class_metrics) == (
        "macro_f1",
        "val_macro_f1",
        True,
    )
    assert load_config(str(path)).pruner.name == "none"
    demo = load_config("demo-pareto")
    assert demo.objective.names == ["val_accuracy", "latency_ms"]
    assert (demo.pruner.name, demo.sampler.name) == ("none", "nsga2")
    # The stored config reads back the same (workers load it from the study).
    assert type(demo).from_dict(demo.to_dict()) == demo


def test_unknown_metric_on_the_command_line_exits_2(tmp_path: Path, tiny_data: Path) -> None:
    config = write_config(tmp_path / "c.yaml", objective={"metrics": ["val_accuracy", "fps"]})
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = create_cli("bad", config, tiny_data, storage, command="run")
    assert_bad_input(result, "objective.metrics: unknown metric 'fps'", "latency_ms")
    assert not (tmp_path / "studies.db").exists()


@pytest.mark.slow
def test_accuracy_against_latency_study(tmp_path: Path, tiny_data: Path) -> None:
    """A real two-objective study: each trial tells its validation accuracy and measured
    latency, reports no epoch (no pruning), and every command handles a front."""
    config = write_config(tmp_path / "c.yaml", objective=MULTI, pruner=None, trials=3)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = create_cli("mo", config, tiny_data, storage, command="run")
    assert result.returncode == 0, result.stderr
    assert "Pareto front of study 'mo' (val_accuracy, latency_ms" in result.stdout
    study = optuna.load_study(study_name="mo", storage=storage)
    assert len(study.directions) == 2 and study.metric_names == ["val_accuracy", "latency_ms"]
    done = [t for t in trials_of(storage, "mo") if t.state == TrialState.COMPLETE]
    assert len(done) == 3  # no pruner
    for t in done:
        assert t.values[1] == t.user_attrs["latency_ms"] > 0
        best_epoch = t.user_attrs["best_epoch"]
        assert t.values[0] == t.user_attrs["history"]["val_accuracy"][best_epoch - 1]
        assert t.intermediate_values == {}
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    front = {t.number for t in study.best_trials}

    def dominated(t: optuna.trial.FrozenTrial) -> bool:  # by a trial at least as good in both
        (acc, ms) = t.values
        return any(o.values != t.values and o.values[0] >= acc and o.values[1] <= ms for o in done)

    assert front and front == {t.number for t in done if not dominated(t)}

    listed = run_cli("export", "--study", "mo", "--storage", storage, "--pareto")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[2:] if line[:5].strip().isdigit()]
    assert {int(r[0]) for r in rows} == front
    assert not (tmp_path / "best.json").exists()

    chosen = min(front)
    out = tmp_path / "best.json"
    exported = run_cli(
        "export", "--study", "mo", "--storage", storage, "--trial", str(chosen), "--out", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    payload = json.loads(out.read_text())
    assert payload["values"]["latency_ms"] == study.trials[chosen].user_attrs["latency_ms"]
    assert payload["value"] == payload["values"]["val_accuracy"]

    for command in (["export"], ["finalize", "--data", str(tiny_data)]):
        refused = run_cli(*command, "--study", "mo", "--storage", storage)
        assert_bad_input(refused, "is multi-objective: it has a Pareto front", "--trial N")

    status = run_cli("status", "--study", "mo", "--storage", storage)
    assert status.returncode == 0, status.stderr
    assert f"front:    {len(front)} Pareto-optimal trial" in status.stdout
    report = tmp_path / "report.html"
    written = run_cli("report", "--study", "mo", "--storage", storage, "--out", str(report))
    assert written.returncode == 0, written.stderr
    page = report.read_text()
    assert "<h2>Pareto front</h2>" in page and "<h3>Pareto front</h3>" in page
    assert "could not draw" not in page and '"type":"scatter"' in page
    assert "Objectives: <b>val_accuracy</b> (maximize), <b>latency_ms</b> (minimize)." in page

    # optuna-dashboard's Pareto page draws the front from what its API serves.
    with serve_dashboard(storage) as base:
        detail = dashboard_study(base, "mo")
    assert detail["objective_names"] == ["val_accuracy", "latency_ms"]
    assert detail["directions"] == ["maximize", "minimize"]
    assert {t["number"] for t in detail["best_trials"]} == front
    served = {t["number"]: t for t in detail["trials"]}
    for t in done:
        attrs = {a["key"]: a["value"] for a in served[t.number]["user_attrs"]}
        assert float(attrs["latency_ms"]) == t.user_attrs["latency_ms"]


def test_export_of_an_unfinished_trial_exits_2(tmp_path: Path) -> None:
    from tests.search.test_report import make_study

    storage = make_study(tmp_path / "s.db", completed=2, pruned=1)  # trial 1 is pruned
    out = tmp_path / "best.json"
    for number, fragment in (("1", "trial 1 of study 'fake' is pruned"), ("9", "no trial 9")):
        result = run_cli(
            "export", "--study", "fake", "--storage", storage, "--trial", number, "--out", str(out)
        )
        assert_bad_input(result, fragment)
        assert not out.exists()
