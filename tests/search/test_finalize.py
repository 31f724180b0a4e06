"""finalize -> export -> train-best --refit, on a copy of the tiny study (2 trials x 2 folds)."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

from search.runtime.storage import open_storage
from tests.conftest import CliResult, assert_bad_input, run_cli
from tests.search.conftest import TinyStudy, copy_study

INFEASIBLE_VALUE = 0.99


@dataclass(frozen=True)
class Finalized:
    root: Path
    data: Path
    storage: str
    name: str
    infeasible: int  # number of the trial that breaks a constraint
    before: dict  # export of the study before finalize
    before_result: CliResult
    result: CliResult  # finalize


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def _export(f: Finalized | tuple[Path, str, str], out: str, *extra: str) -> tuple[CliResult, dict]:
    root, storage, name = (f.root, f.storage, f.name) if isinstance(f, Finalized) else f
    path = root / out
    args = ("export", "--study", name, "--storage", storage, "--out", str(path), *extra)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return result, json.loads(path.read_text())


@pytest.fixture(scope="module")
def finalized(tmp_path_factory: pytest.TempPathFactory, built_tiny_study: TinyStudy) -> Finalized:
    """The tiny study copied, plus one completed trial with the best value that breaks a
    constraint; exported once, then finalized with --top 2 --folds 2."""
    root = tmp_path_factory.mktemp("finalize")
    copied = copy_study(built_tiny_study, root)
    storage, name = copied.storage, copied.name
    study = _study(storage, name)
    model = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(
            params=model.params,
            distributions=model.distributions,
            value=INFEASIBLE_VALUE,
            user_attrs=model.user_attrs,
            constraints={"min_recall/glioma": 0.2},
        )
    )
    infeasible = study.trials[-1].number
    before_result, before = _export((root, storage, name), "before.json")
    result = run_cli(
        "finalize",
        *("--study", name, "--storage", storage, "--data", str(copied.data)),
        *("--top", "2", "--folds", "2"),
    )
    assert result.returncode == 0, result.stderr
    return Finalized(root, copied.data, storage, name, infeasible, before, before_result, result)


def test_export_without_finalize_picks_the_best_feasible_trial(finalized: Finalized) -> None:
    payload = finalized.before
    assert payload["trial"] != finalized.infeasible
    assert payload["selected_by"] == "best val_accuracy on the validation split"
    assert "finalize" not in payload
    assert (
        "selected by: best val_accuracy on the validation split" in finalized.before_result.stdout
    )


def test_finalize_records_finalists_and_winner(finalized: Finalized) -> None:
    study = _study(finalized.storage, finalized.name)
    final = study.user_attrs["finalize"]
    assert (final["folds"], final["top"], final["metric"]) == (2, 2, "val_accuracy")
    numbers = [f["trial"] for f in final["finalists"]]
    assert len(numbers) == 2 and finalized.infeasible not in numbers
    counts = study.user_attrs["data_counts"]
    for f in final["finalists"]:
        assert len(f["scores"]) == 2 and len(f["best_epochs"]) == 2
        assert f["mean"] == pytest.approx(np.mean(f["scores"]))
        assert all(1 <= e <= 2 for e in f["best_epochs"])
        # each fold's pace: its images (together train+val) and seconds, for train-best --timeout
        assert len(f["pace"]) == 2
        assert sum(p["held_out"] for p in f["pace"]) == counts["train"] + counts["val"]
        assert all(
            p["images"] + p["held_out"] == counts["train"] + counts["val"] for p in f["pace"]
        )
        assert all(p["epoch_s"] > 0 and p["other_s"] >= 0 for p in f["pace"])
    assert final["refit_epochs"] is None  # the tiny config does not ask for a longer refit
    best = max(final["finalists"], key=lambda f: (f["mean"], -numbers.index(f["trial"])))
    assert final["winner"] == best["trial"]
    assert final["epochs"] == math.ceil(np.median(best["best_epochs"]))
    assert final["rule"] == "best mean val_accuracy over 2-fold CV of the top 2 trials"
    oof = study.user_attrs["finalize_oof"]
    n_pool = counts["train"] + counts["val"]
    assert oof["trial"] == final["winner"]
    assert len(oof["logits"]) == len(oof["labels"]) == n_pool
    assert all(len(row) == 4 for row in oof["logits"])
    # progress: one line per finalist and fold; a table with the winner marked
    for n in numbers:
        for k in (1, 2):
            assert f"trial {n} fold {k}/2: val_accuracy " in finalized.result.stderr
    assert f"*     {final['winner']}" in finalized.result.stdout
    import optuna_dashboard

    note = optuna_dashboard.get_note(study)
    assert note.startswith(f"# {finalized.name}")  # the study's description is kept
    assert note.count("## Finalize") == 1 and f"trial **{final['winner']}**" in note


def test_export_picks_the_winner_and_carries_the_oof_logits(finalized: Finalized) -> None:
    final = _study(finalized.storage, finalized.name).user_attrs["finalize"]
    result, payload = _export(finalized, "best.json")
    assert payload["trial"] == final["winner"]
    assert payload["selected_by"] == final["rule"]
    assert f"selected by: {final['rule']}" in result.stdout
    assert payload["finalize"]["epochs"] == final["epochs"]
    oof = _study(finalized.storage, finalized.name).user_attrs["finalize_oof"]
    assert payload["finalize"]["oof_logits"] == oof["logits"]  # every row, as finalize stored
    assert payload["finalize"]["oof_labels"] == oof["labels"]
    counts = payload["data_counts"]
    assert len(payload["finalize"]["oof_labels"]) == counts["train"] + counts["val"]


def test_export_of_an_infeasible_trial_warns(finalized: Finalized) -> None:
    result, payload = _export(finalized, "infeasible.json", "--trial", str(finalized.infeasible))
    assert payload["trial"] == finalized.infeasible and payload["selected_by"].startswith("--trial")
    assert "finalize" not in payload
    warning = [line for line in result.stderr.splitlines() if "infeasible" in line]
    assert warning == [payload["warning"]]
    assert "min_recall/glioma +0.200" in warning[0]


def test_finalize_bad_counts_exit_2(finalized: Finalized) -> None:
    base = ("finalize", "--study", finalized.name, "--storage", finalized.storage)
    data = ("--data", str(finalized.data))
    assert_bad_input(run_cli(*base, *data, "--folds", "1"), "--folds must be at least 2")
    assert_bad_input(run_cli(*base, *data, "--folds", "999"), "--folds 999", "glioma")
    assert_bad_input(run_cli(*base, *data, "--top", "0"), "--top must be at least 1")


def test_refit_without_a_finalize_result_exits_2(finalized: Finalized) -> None:
    result = run_cli(
        "train-best",
        *("--config", str(finalized.root / "before.json"), "--data", str(finalized.data)),
        *("--out", str(finalized.root / "never"), "--refit", "--no-record"),
    )
    assert_bad_input(result, "--refit needs a finalize result", "tumor-search finalize")
    assert not (finalized.root / "never").exists()


def test_train_best_refits_for_the_chosen_epochs(finalized: Finalized) -> None:
    _, payload = _export(finalized, "refit.json")
    epochs = payload["finalize"]["epochs"]
    out = finalized.root / "refit"
    result = run_cli(
        "train-best",
        *("--config", str(finalized.root / "refit.json"), "--data", str(finalized.data)),
        *("--out", str(out), "--storage", finalized.storage),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    counts = payload["data_counts"]
    assert metrics["refit"] is True
    assert metrics["trained_on"]["images"] == counts["train"] + counts["val"]
    assert metrics["trained_on"]["epochs"] == epochs
    assert metrics["trial_selected_by"] == payload["selected_by"]
    (run,) = metrics["seeds"]
    assert (run["epochs"], run["images"]) == (epochs, counts["train"] + counts["val"])
    lines = [line for line in result.stderr.splitlines() if "[refit seed 0] epoch " in line]
    assert len(lines) == epochs and f"epoch {epochs}/{epochs}" in lines[-1]
    assert "val_" not in " ".join(lines)  # no validation data
    assert metrics["test_images"] == counts["test"]
    from data.discovery import scan

    testing = Counter(r.label for r in scan(finalized.data).images if r.source == "Testing")
    per_class = [sum(row) for row in run["test"]["confusion_matrix"]]  # every test image, once
    assert per_class == [testing[c] for c in run["test"]["classes"]]
    assert sum(per_class) == counts["test"]
    assert "out-of-fold" in metrics["calibration"]["fitted_on"]
    assert f"refit on train+val: {counts['train'] + counts['val']} images, {epochs} epochs" in (
        result.stdout
    )
    import optuna_dashboard

    note = optuna_dashboard.get_note(_study(finalized.storage, finalized.name))
    assert note.count("## Finalize") == 1 and note.count("## Held-out test result") == 1


def test_refit_epochs_and_timeout_set_the_refits_length(finalized: Finalized) -> None:
    """training.refit_epochs trains the final model longer than finalize's folds chose;
    train-best --timeout keeps to the epochs that fit by the folds' pace."""
    _, payload = _export(finalized, "longer.json")
    chosen = payload["finalize"]["epochs"]
    payload["study_config"]["training"]["refit_epochs"] = chosen + 2
    longer = finalized.root / "longer.json"
    longer.write_text(json.dumps(payload))
    base = ("train-best", "--config", str(longer), "--data", str(finalized.data), "--no-record")
    result = run_cli(*base, "--out", str(finalized.root / "longer"))
    assert result.returncode == 0, result.stderr
    trained = json.loads((finalized.root / "longer" / "metrics.json").read_text())["trained_on"]
    assert trained["epochs"] == chosen + 2
    assert trained["epochs_rule"].startswith("training.refit_epochs; ")
    lines = [line for line in result.stderr.splitlines() if "[refit seed 0] epoch " in line]
    assert len(lines) == chosen + 2
    assert f"{chosen + 2} epochs (training.refit_epochs;" in result.stdout

    # one second cannot hold even the work after a refit: the refit trains one epoch
    result = run_cli(*base, "--out", str(finalized.root / "short"), "--timeout", "1")
    assert result.returncode == 0, result.stderr
    trained = json.loads((finalized.root / "short" / "metrics.json").read_text())["trained_on"]
    assert trained["epochs"] == 1
    assert f"train-best --timeout: 1 of {chosen + 2} refit epochs fit" in result.stderr
    assert trained["epochs_rule"].endswith(f"1 of {chosen + 2} fit in --timeout")

    # a generous timeout changes nothing
    result = run_cli(*base, "--out", str(finalized.root / "roomy"), "--timeout", "3600")
    assert result.returncode == 0, result.stderr
    trained = json.loads((finalized.root / "roomy" / "metrics.json").read_text())["trained_on"]
    assert trained["epochs"] == chosen + 2 and "--timeout" not in result.stderr


def test_refit_seconds_scales_a_folds_pace_to_the_refits_images() -> None:
    from search.results.retrain import VALIDATION_COST, refit_seconds

    pace = [
        {"images": 800.0, "held_out": 800.0, "epoch_s": 2.4, "other_s": 4.0},
        {"images": 800.0, "held_out": 800.0, "epoch_s": 3.0, "other_s": 6.0},
    ]
    per_epoch = 2.7 * 1600 / (800 + VALIDATION_COST * 800)
    assert refit_seconds(pace, 1600, 10) == pytest.approx(5.0 + 10 * per_epoch)
    assert refit_seconds([], 1600, 10) is None


def test_refit_epochs_refit_the_best_trial_when_there_is_no_finalize_result(
    finalized: Finalized,
) -> None:
    """With training.refit_epochs the epoch count is known without finalize: train-best
    refits the trial best on the validation split, uncalibrated (no data left to fit T on),
    and plans --timeout by the trial's own pace."""
    payload = copy.deepcopy(finalized.before)  # the fixture's is shared
    assert "finalize" not in payload
    (pace,) = payload["pace"]  # the trial's: its training and validation images
    counts = payload["data_counts"]
    assert (pace["images"], pace["held_out"]) == (counts["train"], counts["val"])
    assert pace["epoch_s"] > 0
    payload["study_config"]["training"]["refit_epochs"] = 3
    path = finalized.root / "unfinalized.json"
    path.write_text(json.dumps(payload))
    base = ("train-best", "--config", str(path), "--data", str(finalized.data), "--no-record")
    result = run_cli(*base, "--out", str(finalized.root / "unfinalized"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((finalized.root / "unfinalized" / "metrics.json").read_text())
    assert metrics["refit"] is True
    assert metrics["trained_on"]["images"] == counts["train"] + counts["val"]
    assert metrics["trained_on"]["epochs"] == 3
    assert "no finalize result" in metrics["trained_on"]["epochs_rule"]
    assert metrics["calibration"]["applied"] is False
    result = run_cli(*base, "--out", str(finalized.root / "unfinalized-short"), "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert "train-best --timeout: 1 of 3 refit epochs fit" in result.stderr
    # --no-refit still trains on the train split with validation
    result = run_cli(*base, "--out", str(finalized.root / "unfinalized-plain"), "--no-refit")
    assert result.returncode == 0, result.stderr
    plain = json.loads((finalized.root / "unfinalized-plain" / "metrics.json").read_text())
    assert plain["refit"] is False and plain["trained_on"]["splits"] == ["train"]
