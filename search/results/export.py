"""`tumor-search export`: the chosen trial, replayed through the search space, as a file.

The chosen trial is finalize's cross-validated winner when the study has one, else the best
feasible trial on the validation split; `--trial N` exports any completed trial. The file
says which rule chose it (``selected_by``) and carries finalize's summary and out-of-fold
logits, so that `train-best` needs no storage to refit and calibrate."""

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


def feasible_ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that meet every constraint, best first."""
    from search.constraints import is_feasible

    return [t for t in completed_trials(study) if is_feasible(t)]


def infeasible_warning(trial: FrozenTrial) -> str | None:
    """One line when `trial` breaks a constraint of its study; None when it meets them all."""
    from search.constraints import is_feasible, violations

    if is_feasible(trial):
        return None
    return (
        f"warning: trial {trial.number} is infeasible (breaks {', '.join(violations(trial))}); "
        "exported because --trial asked for it"
    )


def _by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """The completed trial `number` (`InputError` when there is none such)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    trial = trials.get(number)
    if trial is None:
        raise InputError(
            f"study {study.study_name!r} has no trial {number} (trials 0 to {len(trials) - 1})"
        )
    if trial.state != TrialState.COMPLETE:
        raise InputError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}; "
            "only a completed trial can be exported"
        )
    return trial


def select_trial(study: optuna.Study, metric: str) -> tuple[FrozenTrial, str]:
    """The trial to export and the rule that chose it: finalize's winner when the study has
    one, else the best feasible trial on the validation split.

    Raises:
        InputError: no completed feasible trial.
    """
    from search.runtime.study import FINALIZE_ATTR

    ranked = feasible_ranked(study)
    if not ranked:
        done = len(completed_trials(study))
        if done:
            raise InputError(
                f"study {study.study_name!r}: all {done} completed trials break its constraints; "
                "export one anyway with --trial N"
            )
        raise InputError(
            f"study {study.study_name!r} has no completed trial yet; nothing to export"
        )
    final = study.user_attrs.get(FINALIZE_ATTR)
    if isinstance(final, dict):
        for trial in ranked:
            if trial.number == final.get("winner"):
                return trial, str(final["rule"])
    return ranked[0], f"best {metric} on the validation split"


def finalize_payload(study: optuna.Study, number: int) -> dict[str, Any] | None:
    """finalize's summary with the winner's out-of-fold logits and labels, when trial
    `number` is finalize's winner; None otherwise."""
    from search.runtime.study import FINALIZE_ATTR, OOF_ATTR

    final = study.user_attrs.get(FINALIZE_ATTR)
    if not isinstance(final, dict) or final.get("winner") != number:
        return None
    out = dict(final)
    oof = study.user_attrs.get(OOF_ATTR)
    if isinstance(oof, dict) and oof.get("trial") == number:
        out["oof_logits"], out["oof_labels"] = oof["logits"], oof["labels"]
    return out


def build_export(
    study_name: str, storage_url: str | None, top: int = 1, trial: int | None = None
) -> dict[str, Any]:
    """The contents of best.json: finalize's winner, else the best feasible trial, or trial
    `trial` when given (with a ``warning`` when it is infeasible).

    Raises:
        InputError: no such study or trial, or no completed feasible trial yet.
    """
    study, config = open_study(study_name, storage_url)
    if trial is None:
        refuse_multi(study, "export does not pick one of them by itself")
        best, selected_by = select_trial(study, config.objective.metric)
        warning = None
    else:
        best, selected_by = _by_number(study, trial), f"--trial {trial}"
        warning = infeasible_warning(best)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "study": study_name,
        "storage": describe_storage(storage_url),
        "trial": best.number,
        "selected_by": selected_by,
        "metric": config.objective.metric,
        "direction": config.objective.direction,
        "value": _value_of(best, config),
        "values": dict(zip(config.objective.names, best.values, strict=True)),
        "trial_config": trial_config_of(best, config).to_dict(),
        "params": best.params,
        "validation": best.user_attrs.get("validation", {}),
        "best_epoch": best.user_attrs.get("best_epoch"),
        "pace": trial_pace(best, study.user_attrs.get(COUNTS_ATTR)),
        "constraints": best.constraints,
        "study_config": config.to_dict(),
        "data_fingerprint": study.user_attrs.get(FINGERPRINT_ATTR),
        "data_counts": study.user_attrs.get(COUNTS_ATTR),
        "classes": study.user_attrs.get(CLASSES_ATTR),
        "versions": versions(),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if warning:
        payload["warning"] = warning
    final = finalize_payload(study, best.number)
    if final is not None:
        payload["finalize"] = final
    if top > 1 and len(study.directions) == 1:  # a front has no order to take the top of
        payload["top"] = [
            {
                "trial": t.number,
                "value": t.value,
                "trial_config": trial_config_of(t, config).to_dict(),
                "validation": t.user_attrs.get("validation", {}),
            }
            for t in feasible_ranked(study)[:top]
        ]
    return payload


def trial_pace(trial: FrozenTrial, counts: Any) -> list[dict[str, float]]:
    """How fast the trial trained, in finalize's fold pace terms (`finalize.fold_pace`), for
    train-best --timeout when no finalize result is there; [] without its timings."""
    phases = trial.user_attrs.get("phase_seconds") or {}
    epochs = trial.user_attrs.get("epochs_run")
    if not isinstance(counts, dict) or not epochs or "epochs" not in phases:
        return []
    compile_s = float(phases.get("compile", 0.0))
    return [
        {
            "images": float(counts.get("train", 0)),
            "held_out": float(counts.get("val", 0)),
            "epoch_s": round(max(float(phases["epochs"]) - compile_s, 0.0) / epochs, 4),
            "other_s": round(float(phases.get("setup", 0.0)) + compile_s, 4),
        }
    ]


def _value_of(trial: FrozenTrial, config: Any) -> float:
    """The trial's `objective.metric` (in a multi-objective study, one of its values)."""
    return float(trial.values[config.objective.names.index(config.objective.metric)])


def refuse_multi(study: optuna.Study, what: str) -> None:
    """`InputError` for a multi-objective study, which has a Pareto front and no best trial."""
    from search.results.pareto import front, is_multi

    if not is_multi(study):
        return
    numbers = ", ".join(str(t.number) for t in front(study)) or "none yet"
    raise InputError(
        f"study {study.study_name!r} is multi-objective: it has a Pareto front (trials "
        f"{numbers}), not one best trial, and {what}; list the front with export --pareto "
        "and export one of its trials with export --trial N"
    )


def export_best(
    study_name: str, storage_url: str | None, out: Path, top: int = 1, trial: int | None = None
) -> dict[str, Any]:
    payload = build_export(study_name, storage_url, top, trial)
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
