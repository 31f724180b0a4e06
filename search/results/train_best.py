"""`tumor-search train-best`: retrain the exported configuration and evaluate it once on the
held-out test split.

With ``--seeds N`` the configuration is trained N times (seeds differ); each model is
evaluated once on the test split; the model with the best validation score is saved, and
the metrics file holds its test metrics and the mean and standard deviation over seeds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import log
from search.errors import ExportFailed, InputError, one_line
from search.results.calibrate import calibrate_selected
from search.results.evaluation import bootstrap_intervals, classification_metrics
from search.results.export import read_export
from search.results.formats import (
    check_formats,
    failures,
    float32_for_exports,
    parse_formats,
    write_formats,
)
from search.results.held_out import write_examples_and_card
from search.results.model_card import test_result_markdown
from search.results.outputs import (
    check_writable_dir,
    make_out_dir,
    read_document,
    save_model,
    write_document,
)
from search.results.retrain import refit_plan, refit_seeds, training_record, wants_refit
from search.results.study_note import save_section
from search.study_data import check_matches, load_test, load_train_val, prepare
from search.training.batching import predict

TEST_NOTE_HEADING = "## Held-out test result"


def train_best(
    best_path: str,
    data_dir: str | None,
    out_dir: str,
    seeds: int = 1,
    storage_url: str | None = None,
    record: bool = True,
    refit: bool | None = None,
    formats: str = "keras",
    deadline: float | None = None,
) -> dict[str, Any]:
    """Retrain, evaluate once on the test split, write ``model.keras`` and ``metrics.json``
    (and the other `formats`, each checked against Keras: `search.results.formats`).

    `refit` (default: when `training.refit_epochs` or a finalize result gives the epochs)
    trains on train+val, no more epochs than fit before a `deadline` (`search.results.retrain`).

    Raises:
        InputError, ConfigError, DataError: before any training starts.
    """
    payload, config, trial_config, wanted = _read_request(best_path, seeds, formats)
    refit = wants_refit(payload, refit, str(best_path), config)
    out = check_writable_dir(out_dir)
    config.weights_policy()  # a weights file must exist here too
    data = prepare(config, data_dir)
    check_matches(data, payload["study"], payload["data_fingerprint"], payload.get("data_counts"))
    train_val = load_train_val(data, config.data.image_size)
    test = load_test(data, config.data.image_size)
    log(
        f"retraining trial {payload.get('trial')} of study {payload['study']!r}: {trial_config.describe()}"
    )
    plan = None
    if refit:
        plan = refit_plan(payload, config, train_val, seeds, deadline)
        runs, best_model, best_index = refit_seeds(
            config, trial_config, train_val, test, seeds, plan.epochs
        )
    else:
        runs, best_model, best_index = _train_seeds(config, trial_config, train_val, test, seeds)
    best_model, calibration = calibrate_selected(
        best_model, train_val, payload, test, trial_config.batch_size, refit=refit
    )
    summary = _summary(payload, config, trial_config, data, test, runs, best_index)
    summary.update(training_record(payload, config, train_val, plan, seeds))
    summary["calibration"] = calibration
    make_out_dir(out)
    save_model(best_model, out / "model.keras")  # calibrated: T in its head
    summary["formats"] = {
        "keras": {"path": "model.keras"},
        **write_formats(best_model, wanted, out, list(train_val.classes), test.x[:32]),
    }
    write_examples_and_card(best_model, summary, payload, data, test, out, storage_url)
    write_document(out / "metrics.json", summary)
    if record:
        _record_on_study(payload, summary, storage_url)
    failed = failures(summary["formats"])
    if failed:
        raise ExportFailed(f"{failed}; model.keras, metrics.json and the test result stand")
    return summary


def _read_request(best_path: str, seeds: int, formats: str) -> tuple[Any, Any, Any, Any]:
    """The export, its study config (float32 when exports need it), its trial config and the
    formats asked for; `InputError` for any of them that is bad."""
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    payload = read_document(best_path, flag="--config")
    config, trial_config = read_export(payload, str(best_path))
    wanted = parse_formats(formats)
    check_formats(wanted, trial_config.backbone)
    return payload, float32_for_exports(config, wanted), trial_config, wanted


def _train_seeds(
    config: Any, trial_config: Any, train_val: Any, test: Any, seeds: int
) -> tuple[list[dict[str, Any]], Any, int]:
    """Train once per seed, test each model once; the runs, and the model (and its index)
    with the best validation score."""
    from search.training.callbacks import EpochRecorder
    from search.training.fit import fit  # imports Keras: only once input is good

    classes = list(train_val.classes)
    runs: list[dict[str, Any]] = []
    best_model, best_val, best_index = None, None, 0
    direction = config.objective.direction
    for i in range(seeds):
        seed = config.training.seed + i
        recorder = EpochRecorder(f"[seed {seed}]", config.training.epochs)
        result = fit(trial_config, config, train_val, recorder, seed=seed)
        probs = predict(result.model, test.x, trial_config.batch_size)
        metrics = classification_metrics(test.y, probs.argmax(axis=1), classes)
        runs.append(
            {
                "seed": seed,
                "best_epoch": result.best_epoch,
                config.objective.metric: result.best_value,
                "validation": result.metrics_at_best(),
                "test": metrics,
            }
        )
        log(
            f"[seed {seed}] best {config.objective.metric} {result.best_value:.4f}, test accuracy {metrics['accuracy']:.4f}"
        )
        better = best_val is None or (
            result.best_value > best_val
            if direction == "maximize"
            else result.best_value < best_val
        )
        if better:
            best_model, best_val, best_index = result.model, result.best_value, i
    return runs, best_model, best_index


def _summary(
    payload: dict[str, Any],
    config: Any,
    trial_config: Any,
    data: Any,
    test: Any,
    runs: list[dict[str, Any]],
    best_index: int,
) -> dict[str, Any]:
    """The metrics.json document."""
    accuracies = np.array([r["test"]["accuracy"] for r in runs])
    selected = runs[best_index]
    return {
        "study": payload["study"],
        "trial": payload.get("trial"),
        "trial_config": trial_config.to_dict(),
        "data_fingerprint": data.fingerprint,
        "classes": list(data.classes),
        "test_images": len(test.y),
        "selected_seed": selected["seed"],
        "selected_by": f"best {config.objective.metric} on the validation split",
        "test": selected["test"],
        "intervals": bootstrap_intervals(selected["test"]["confusion_matrix"], data.classes),
        "test_accuracy_mean": float(accuracies.mean()),
        "test_accuracy_std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
        "seeds": runs,
        "model": "model.keras",
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _record_on_study(
    payload: dict[str, Any], summary: dict[str, Any], storage_url: str | None
) -> None:
    """Attach the result to the study (user attribute and dashboard note); a storage that
    cannot be reached only costs a warning, never the trained model."""
    import optuna

    from search.runtime.storage import STORAGE_ENV, open_storage

    url = storage_url or os.environ.get(STORAGE_ENV) or payload.get("storage")
    if not url or "***" in url:
        log("not recorded on the study: pass --storage (the exported URL hides its password)")
        return
    try:
        storage = open_storage(url)
        study = optuna.load_study(study_name=payload["study"], storage=storage)
        compact = {k: v for k, v in summary.items() if k != "seeds"}
        study.set_user_attr("train_best", json.loads(json.dumps(compact)))
        # Keep the study's description and other sections; replace an earlier test result.
        save_section(study, TEST_NOTE_HEADING, _note(payload, summary))
        log(f"recorded the test result on study {payload['study']!r}")
        _attach_files(study, summary)
    except Exception as exc:  # noqa: BLE001 - the model and metrics are already written
        log(f"warning: could not record the result on the study: {one_line(str(exc))}")


def _attach_files(study: Any, summary: dict[str, Any]) -> None:
    """The metrics, the model card and the Grad-CAM examples into the study's artifact
    store, where optuna-dashboard shows them beside the study."""
    from search.runtime.artifacts import store_of, upload

    store = store_of(study)
    out = Path(summary.get("out_dir") or "")
    if store is None or not out.is_dir():
        return
    files = [out / "metrics.json", out / "MODEL_CARD.md", *sorted(out.glob("explain/*.png"))]
    kinds = {".json": "application/json", ".md": "text/markdown", ".png": "image/png"}
    for file in files:
        if file.is_file():
            name = f"train_best_{file.name}"
            upload(store, study, name, file.read_bytes(), kinds.get(file.suffix, "text/plain"))


def _note(payload: dict[str, Any], summary: dict[str, Any]) -> str:
    """The dashboard note's section: test metrics with 95 % intervals, and calibration."""
    return (
        f"{TEST_NOTE_HEADING} (train-best, {summary['trained_at']})\n\n"
        f"Trial {payload.get('trial')}: `{json.dumps(summary['trial_config'])}`\n\n"
        f"{test_result_markdown(summary)}\n"
    )
