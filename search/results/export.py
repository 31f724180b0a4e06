"""`tumor-search export`: the best trial, replayed through the search space, as a file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.trial_config import TrialConfig
from search.errors import InputError
from search.results.outputs import write_document
from search.runtime.study import (
    CLASSES_ATTR,
    COUNTS_ATTR,
    FINGERPRINT_ATTR,
    TRIAL_CONFIG_ATTR,
    describe_storage,
    open_study,
    versions,
)
from search.space import replay

FORMAT = "tumor-search/best/v1"


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best first."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(trials, key=lambda t: (t.value, -t.number), reverse=reverse)


def trial_config_of(trial: FrozenTrial, study_config: Any) -> TrialConfig:
    """Replay a trial's params through `space.py`; it must give the config the trial trained."""
    config = replay(trial.params, study_config.space)
    recorded = trial.user_attrs.get(TRIAL_CONFIG_ATTR)
    if recorded is not None and TrialConfig.from_dict(recorded) != config:
        raise RuntimeError(f"trial {trial.number}: replayed config differs from the recorded one")
    return config


def build_export(study_name: str, storage_url: str | None, top: int = 1) -> dict[str, Any]:
    """The contents of best.json.

    Raises:
        InputError: no such study, or no completed trial yet.
    """
    study, config = open_study(study_name, storage_url)
    ranked = completed_trials(study)
    if not ranked:
        raise InputError(f"study {study_name!r} has no completed trial yet; nothing to export")
    best = ranked[0]
    trial_config = trial_config_of(best, config)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "study": study_name,
        "storage": describe_storage(storage_url),
        "trial": best.number,
        "metric": config.objective.metric,
        "direction": config.objective.direction,
        "value": best.value,
        "trial_config": trial_config.to_dict(),
        "params": best.params,
        "validation": best.user_attrs.get("validation", {}),
        "best_epoch": best.user_attrs.get("best_epoch"),
        "study_config": config.to_dict(),
        "data_fingerprint": study.user_attrs.get(FINGERPRINT_ATTR),
        "data_counts": study.user_attrs.get(COUNTS_ATTR),
        "classes": study.user_attrs.get(CLASSES_ATTR),
        "versions": versions(),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if top > 1:
        payload["top"] = [
            {
                "trial": t.number,
                "value": t.value,
                "trial_config": trial_config_of(t, config).to_dict(),
                "validation": t.user_attrs.get("validation", {}),
            }
            for t in ranked[:top]
        ]
    return payload


def export_best(
    study_name: str, storage_url: str | None, out: Path, top: int = 1
) -> dict[str, Any]:
    payload = build_export(study_name, storage_url, top)
    write_document(out, payload)
    return payload


def read_export(payload: Any, source: str) -> tuple[Any, TrialConfig]:
    """Validate a best.json payload; return (study config, trial config).

    Raises:
        InputError: not a tumor-search export, or a field that does not validate.
    """
    from models.errors import ModelError
    from search.config import StudyConfig

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{source} is not a tumor-search export (expected format {FORMAT!r})")
    for key in ("study_config", "trial_config", "data_fingerprint", "study"):
        if key not in payload:
            raise InputError(f"{source} is malformed: missing {key!r}")
    config = StudyConfig.from_dict(payload["study_config"], source=f"{source} study_config")
    try:
        trial_config = TrialConfig.from_dict(payload["trial_config"])
    except (ModelError, TypeError) as exc:
        raise InputError(f"{source} trial_config: {exc}") from None
    return config, trial_config
