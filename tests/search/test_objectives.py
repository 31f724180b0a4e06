"""Objectives beyond accuracy (balanced accuracy, macro F1) and clinician constraints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from search.config import load_config
from search.constraints import apply_constraints, is_feasible, violations
from search.errors import ConfigError
from search.training.val_metrics import class_metrics
from tests.conftest import assert_bad_input, run_cli
from tests.search.helpers import create_cli, trials_of, write_config

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


def test_class_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    got = class_metrics(y_true, y_pred, CLASSES)
    assert got["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert got["val_macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    recalls = recall_score(y_true, y_pred, average=None)
    for name, recall in zip(CLASSES, recalls, strict=True):
        assert got[f"val_recall/{name}"] == pytest.approx(recall)


def test_balanced_accuracy_ignores_a_class_missing_from_validation() -> None:
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 3, 1, 1, 0])
    got = class_metrics(y_true, y_pred, CLASSES)
    assert got["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))


@pytest.mark.parametrize(
    ("constraints", "fragment"),
    [
        ({"max_recall": {"glioma": 0.5}}, "unknown key objective.constraints.max_recall"),
        ({"min_recall": {"glioma": 1.01}}, "expected a recall in (0, 1]"),
        ({"min_recall": {"glioma": 0}}, "expected a recall in (0, 1]"),
        ({"min_recall": {"glioma": True}}, "expected a recall in (0, 1]"),
        ({"min_recall": []}, "must map class names to recalls"),
        ({"min_recall": {}}, "must map class names to recalls"),
        (["min_recall"], "expected dict"),
        ({"max_latency_ms": 0}, "max_latency_ms: expected a positive number"),
        ({"max_params_m": -1}, "max_params_m: expected a positive number"),
        ({"max_size_mb": "small"}, "max_size_mb: expected a positive number"),
        ({"max_latency_ms": True}, "max_latency_ms: expected a positive number"),
        ({"max_latency_ms": float("inf")}, "max_latency_ms: expected a positive number"),
    ],
)
def test_malformed_constraints_are_refused(tmp_path: Path, constraints, fragment: str) -> None:
    path = write_config(tmp_path / "c.yaml", objective={"constraints": constraints})
    with pytest.raises(ConfigError, match=r"objective\.constraints") as err:
        load_config(str(path))
    assert fragment in str(err.value)


def test_objective_metrics_and_directions(tmp_path: Path) -> None:
    for metric, monitor, direction in (
        ("val_accuracy", "val_accuracy", "maximize"),
        ("balanced_accuracy", "val_balanced_accuracy", "maximize"),
        ("macro_f1", "val_macro_f1", "maximize"),
        ("val_loss", "val_loss", "minimize"),
    ):
        path = write_config(tmp_path / f"{metric}.yaml", objective={"metric": metric})
        objective = load_config(str(path)).objective
        assert (objective.monitor, objective.direction) == (monitor, direction)


def test_constraint_on_an_unknown_class_exits_2_before_a_study_exists(
    tmp_path: Path, tiny_data: Path
) -> None:
    config = write_config(
        tmp_path / "c.yaml", objective={"constraints": {"min_recall": {"astrocytoma": 0.8}}}
    )
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = create_cli("unknown_class", config, tiny_data, storage)
    assert_bad_input(result, "unknown class 'astrocytoma'", "glioma")
    listed = run_cli("study", "list", "--storage", storage)
    assert "unknown_class" not in listed.stdout


def test_infeasible_trial_with_the_best_value_is_never_best(tmp_path: Path) -> None:
    """Constraints recorded by `apply_constraints` on real trials in real storage."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize", study_name="c"
    )
    constraints = {"min_recall": {"glioma": 0.85}}
    for value, recall in ((0.99, 0.60), (0.90, 0.90), (0.80, 0.95)):
        trial = study.ask()
        feasible = apply_constraints(trial, constraints, {"val_recall/glioma": recall})
        assert feasible is (recall >= 0.85)
        study.tell(trial, value)
    best = study.best_trial
    assert (best.number, best.value) == (1, 0.90)
    first = study.trials[0]
    assert not is_feasible(first) and violations(first) == ["min_recall/glioma +0.250"]
    assert first.user_attrs["feasible"] is False
    # The report names the best (feasible) trial and lists the infeasible one.
    from search.results.report_data import ReportData
    from search.results.report_tables import best_trial_html

    path = write_config(tmp_path / "c.yaml", objective={"constraints": constraints})
    data = ReportData(study, load_config(str(path)), tuple(study.trials))
    page = best_trial_html(data)
    assert "Trial 1: val_accuracy <b>0.9000</b>" in page
    assert "Infeasible trials" in page and "min_recall/glioma +0.250" in page


def test_footprint_limits_mark_a_trial_infeasible(tmp_path: Path) -> None:
    """``max_latency_ms`` and ``max_params_m`` against a trial's measured footprint: the value
    is what it measured minus the limit, so the fast small trial wins over the better one."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize", study_name="f"
    )
    constraints = {"max_latency_ms": 20, "max_params_m": 5}
    for value, latency, params in ((0.99, 35.0, 4.0), (0.95, 12.0, 7.5), (0.90, 8.0, 2.0)):
        trial = study.ask()
        footprint = {"latency_ms": latency, "params_m": params, "size_mb": 4 * params}
        assert apply_constraints(trial, constraints, footprint) is (value == 0.90)
        study.tell(trial, value)
    assert study.best_trial.number == 2
    assert violations(study.trials[0]) == ["max_latency_ms +15.000"]
    assert violations(study.trials[1]) == ["max_params_m +2.500"]
    # Not measured (cannot happen after a finished fit, but never counts as met).
    trial = study.ask()
    assert apply_constraints(trial, {"max_size_mb": 3}, {}) is False
    study.tell(trial, 1.0)
    assert study.best_trial.number == 2


@pytest.mark.slow
def test_balanced_accuracy_study_with_a_recall_constraint(tmp_path: Path, tiny_data: Path) -> None:
    """A real study scored on balanced accuracy under a glioma recall floor: each trial's
    value is the mean of its recorded per-class recalls, each constraint is the floor minus
    the recorded recall, and the best trial (if any) is feasible."""
    config = write_config(
        tmp_path / "c.yaml",
        trials=2,
        pruner={"name": "none"},
        objective={
            "metric": "balanced_accuracy",
            # A latency limit no tiny model breaks: recorded beside the recall floor.
            "constraints": {"min_recall": {"glioma": 0.5}, "max_latency_ms": 10_000},
        },
    )
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = create_cli("bal", config, tiny_data, storage, command="run")
    assert result.returncode == 0, result.stderr
    assert "validation images: accuracy moves in steps of" in result.stderr
    done = [t for t in trials_of(storage, "bal") if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        val = t.user_attrs["validation"]
        recalls = [val[f"val_recall/{c}"] for c in CLASSES]
        assert t.value == pytest.approx(val["val_balanced_accuracy"], abs=1e-6)
        assert t.value == pytest.approx(np.mean(recalls), abs=1e-5)
        assert t.constraints == {
            "min_recall/glioma": pytest.approx(0.5 - recalls[0], abs=1e-5),
            "max_latency_ms": pytest.approx(t.user_attrs["latency_ms"] - 10_000, abs=1e-5),
        }
        # The footprint every finished trial measures of its model (models.footprint).
        assert 0.0 < t.user_attrs["latency_ms"] < 10_000
        assert t.user_attrs["params_m"] == pytest.approx(t.user_attrs["params"] / 1e6)
        weights_mb = t.user_attrs["params"] * 4 / 1e6  # float32, without optimizer state
        assert weights_mb < t.user_attrs["size_mb"] < 1.1 * weights_mb + 0.05
        assert t.user_attrs["feasible"] is (recalls[0] >= 0.5)
    status = run_cli("status", "--study", "bal", "--storage", storage)
    assert status.returncode == 0, status.stderr
    feasible = [t for t in done if is_feasible(t)]
    if feasible:
        best = max(feasible, key=lambda t: t.value)
        assert f"(trial {best.number})" in status.stdout
        assert f"{best.user_attrs['latency_ms']:.2f} ms per image at batch 1" in status.stdout
    else:
        assert "no feasible trial yet" in status.stdout
    for t in done:
        if not is_feasible(t):
            assert f"infeasible: trial {t.number}: min_recall/glioma" in status.stdout


def test_small_validation_warning() -> None:
    from search.cli.args import small_validation_warning

    assert small_validation_warning(2) == (
        "warning: 2 validation images: accuracy moves in steps of 0.5, too coarse to rank "
        "trials (use more data or a larger data.val_fraction; finalize, which `run` ends with, "
        "ranks the best by cross-validation)"
    )
    assert "steps of 0.0101" in (small_validation_warning(99) or "")
    assert small_validation_warning(100) is None and small_validation_warning(0) is None


@pytest.mark.parametrize("metric", ["macro_f1", "val_loss"])
def test_fit_reports_the_configured_metric(tmp_path: Path, tiny_data: Path, metric: str) -> None:
    """fit's best value is the objective's metric at the best epoch: macro F1 equals
    scikit-learn's on the returned (best-epoch) model's own predictions; a val_loss study
    keeps Keras' metrics only (no extra prediction pass) and minimises."""
    from models.trial_config import TrialConfig
    from search.study_data import load_train_val, prepare
    from search.training.callbacks import EpochRecorder
    from search.training.fit import fit

    path = write_config(
        tmp_path / "c.yaml", objective={"metric": metric}, training={"epochs": 2, "seed": 0}
    )
    config = load_config(str(path)).with_overrides(data_path=str(tiny_data))
    data = load_train_val(prepare(config), config.data.image_size)
    trial_config = TrialConfig("small_cnn", head_depth=0, learning_rate=3e-3, fine_tune=1.0)
    result = fit(trial_config, config, data, EpochRecorder("[t]", 2))
    if metric == "val_loss":
        assert "val_macro_f1" not in result.history
        assert result.best_value == min(result.history["val_loss"])
        return
    assert len(result.history["val_macro_f1"]) == result.epochs_run
    assert result.best_value == max(result.history["val_macro_f1"])
    predicted = np.argmax(result.model.predict(data.x_val, batch_size=16, verbose=0), axis=1)
    labels = list(range(data.n_classes))
    expected = f1_score(data.y_val, predicted, labels=labels, average="macro", zero_division=0.0)
    assert result.best_value == pytest.approx(expected, abs=1e-9)
