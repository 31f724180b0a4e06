"""`run` ends with finalize: the README's path (run, export, train-best) picks by
cross-validation and refits without the user knowing the word `finalize`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from search.runtime.storage import open_storage
from search.runtime.time_plan import (
    DEFAULT_FOLDS,
    FINALIZE_SETUP_SECONDS,
    FINALIZE_SHARE,
    MAX_TOP,
    finalize_plan,
    fold_seconds,
    plan_for,
    reserved_plan,
    stop_search,
)
from tests.conftest import run_cli
from tests.search.helpers import write_config

ONE_EPOCH = {"training": {"epochs": 2, "early_stopping_patience": 0}, "pruner": {"name": "none"}}


def _study(storage: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def _run(folder: Path, data: Path, trials: int, *extra: str, **config: Any) -> tuple[Any, str]:
    """`run` of a fresh tiny study of `trials` trials in `folder`; (result, storage URL)."""
    storage = f"sqlite:///{folder / 's.db'}"
    path = write_config(folder / "c.yaml", trials=trials, **{**ONE_EPOCH, **config})
    result = run_cli(
        "run", "--config", str(path), "--data", str(data), "--storage", storage, *extra
    )
    assert result.returncode == 0, result.stderr
    return result, storage


def test_finalize_plan_takes_three_folds_then_the_most_finalists() -> None:
    ranked = [20.0] * 8
    plan = finalize_plan(1000.0, ranked, 0.15)
    assert plan is not None and (plan.top, plan.folds) == (MAX_TOP, 3)
    fits = MAX_TOP * 3 * fold_seconds(20.0, 3, 0.15)
    assert plan.seconds == pytest.approx(FINALIZE_SETUP_SECONDS + fits)
    three = finalize_plan(200.0, ranked, 0.15)  # 3 x 3 folds fit; 5 x 2 folds would too
    assert three is not None and (three.top, three.folds) == (3, 3)
    small = finalize_plan(100.0, ranked, 0.15)
    assert small is not None and (small.top, small.folds) == (2, 2)
    assert small.seconds <= 100.0
    assert finalize_plan(20.0, ranked, 0.15) is None  # not even 2 trials x 2 folds
    assert finalize_plan(1000.0, [20.0], 0.15) is None  # one trial: nothing to choose
    assert plan_for(3, DEFAULT_FOLDS, [10.0, 30.0], 0.2).top == 2


def _first_stop(timeout: float, ranked: list[float]) -> int:
    return next(t for t in range(0, int(timeout)) if stop_search(float(t), timeout, ranked, 0.15))


def test_a_long_run_searches_until_only_the_full_finalize_fits() -> None:
    ranked = [20.0] * 6
    full = plan_for(MAX_TOP, 3, ranked, 0.15).seconds  # 5 trials x 3 folds
    timeout = 3600.0
    assert not stop_search(600.0, timeout, ranked, 0.15)  # early: search on
    assert not stop_search(0.5 * timeout, timeout, ranked, 0.15)
    # The first moment one more trial would leave the full finalize no room: stop there.
    stop = _first_stop(timeout, ranked)
    assert timeout - stop >= full > timeout - stop - 20.0
    assert not stop_search(30.0, timeout, [20.0], 0.15)  # one trial: nothing to finalize


def test_a_short_run_leaves_room_for_a_smaller_finalize_and_searches_up_to_it() -> None:
    # The bench-peer case: two fast trials on top, slower ones below, 265 s. The full
    # finalize never fits in FINALIZE_SHARE of it; 2 trials x 3 folds do, and the search
    # goes on until one more trial would leave them no room (it once stopped at half).
    ranked = [14.5, 11.9, 34.0, 34.3]
    plan = reserved_plan(265.0, ranked, 0.15)
    assert plan is not None and (plan.top, plan.folds) == (2, 3)
    assert plan.seconds <= FINALIZE_SHARE * 265.0
    stop = _first_stop(265.0, ranked)
    next_trial = sum(ranked) / len(ranked)
    assert 265.0 - stop - next_trial < plan.seconds <= 265.0 - stop - next_trial + 1.0
    assert stop > 0.55 * 265.0
    # Longer trials: only 2 x 2 folds fit in the share; the search still stops for them.
    assert reserved_plan(265.0, [30.0] * 3, 0.15).folds == 2
    assert stop_search(150.0, 265.0, [30.0] * 3, 0.15)
    # Two trials done early: the plan counts the trials to come at the mean duration, not
    # the small plan these two would need (a search once stopped after 61 s of 265 s).
    assert not stop_search(61.0, 265.0, [43.0, 14.0], 0.15)
    assert not stop_search(61.0, 3600.0, [43.0, 14.0], 0.15)
    # Trials too long for any finalize in the share: search on to the end (run skips it).
    assert reserved_plan(265.0, [70.0] * 3, 0.15) is None
    assert not stop_search(200.0, 265.0, [70.0] * 3, 0.15)


def test_run_finalizes_and_export_and_train_best_follow_it(tmp_path: Path, tiny_data: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = write_config(tmp_path / "c.yaml", trials=3, **ONE_EPOCH)
    where = ("--data", str(tiny_data), "--storage", storage)
    result = run_cli("run", "--config", str(config), *where, "--finalize")
    assert result.returncode == 0, result.stderr
    assert "finalize: re-scoring the top 3 trials by 3-fold cross-validation" in result.stderr
    assert "Finalists of study 'tiny'" in result.stdout
    final = _study(storage).user_attrs["finalize"]
    assert (final["top"], final["folds"]) == (3, 3)
    assert f"(trial {final['winner']}," in result.stdout  # the chosen configuration
    assert "chosen by best mean val_accuracy over 3-fold CV" in result.stdout

    best = tmp_path / "best.json"
    exported = run_cli("export", "--study", "tiny", "--storage", storage, "--out", str(best))
    assert exported.returncode == 0, exported.stderr
    payload = json.loads(best.read_text())
    assert payload["trial"] == final["winner"]
    assert payload["selected_by"].startswith("best mean val_accuracy over 3-fold CV")
    out = tmp_path / "best"
    trained = run_cli("train-best", "--config", str(best), *where, "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["refit"] is True
    assert metrics["trained_on"]["epochs"] == final["epochs"]

    # Run again: the best trial is already a finalist, so finalize is not repeated.
    again = run_cli("run", "--config", str(config), *where, "--finalize")
    assert again.returncode == 0, again.stderr
    assert "already among its finalists" in again.stderr


@pytest.mark.slow
def test_run_with_a_timeout_stops_searching_to_leave_finalize_its_time(
    tmp_path: Path, tiny_data: Path
) -> None:
    result, storage = _run(tmp_path, tiny_data, 200, "--timeout", "40", "--finalize")
    assert "search stopped after" in result.stderr, result.stderr[-3000:]
    assert "the rest is for finalize" in result.stderr
    study = _study(storage)
    final = study.user_attrs["finalize"]
    assert final["top"] >= 2
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 2 <= len(done) < 200
    last_start = max(t.datetime_start for t in study.trials)
    first_start = min(t.datetime_start for t in study.trials)
    assert (last_start - first_start).total_seconds() < 40.0


def test_no_finalize_and_multi_objective_studies_end_without_it(
    tmp_path: Path, tiny_data: Path
) -> None:
    result, storage = _run(tmp_path, tiny_data, 2, "--no-finalize")
    assert "finalize" not in _study(storage).user_attrs
    assert "chosen by best val_accuracy on the validation split" in result.stdout

    multi = tmp_path / "multi"
    multi.mkdir()
    metrics = {"metrics": ["val_accuracy", "latency_ms"]}
    result, storage = _run(multi, tiny_data, 2, "--finalize", objective=metrics)
    assert "finalize:" not in result.stderr and "Finalists" not in result.stdout
    assert "finalize" not in _study(storage).user_attrs


def test_finalize_past_its_deadline_keeps_the_first_two_finalists(tiny_study) -> None:  # noqa: ANN001
    import time

    from search.results.finalize import finalize

    summary = finalize(
        tiny_study.name, tiny_study.storage, str(tiny_study.data), top=3, folds=2,
        deadline=time.time(),
    )  # fmt: skip
    assert len(summary["finalists"]) == 2 and summary["top"] == 2
    assert "top 2 trials" in summary["rule"]


def test_finalize_paces_a_finalist_by_its_own_trial_time() -> None:
    import datetime as dt

    from search.results.finalize import FinalistPace

    def trial(seconds: float) -> optuna.trial.FrozenTrial:
        start = dt.datetime(2026, 1, 1)
        made = optuna.trial.create_trial(value=0.9)
        made.datetime_start, made.datetime_complete = start, start + dt.timedelta(seconds=seconds)
        return made

    pace = FinalistPace()
    assert pace.expected(trial(30.0)) == 0.0
    pace.record(trial(14.0), 21.0)  # a fast trial's folds took 1.5 times its search time
    pace.record(trial(12.0), 18.0)
    assert pace.expected(trial(34.0)) == pytest.approx(51.0)  # a slow one's will too
    no_time = optuna.trial.create_trial(value=0.9)
    assert pace.expected(no_time) == pytest.approx(19.5)  # without a duration: the mean
