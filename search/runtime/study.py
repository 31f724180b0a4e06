"""Creating and opening studies: config and data fingerprint in the study, seeds enqueued
once, sampler and pruner built from the config, and the shared trial budget."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.pauses import pause
from common.progress import log
from search.config import StudyConfig
from search.errors import InputError
from search.runtime.artifacts import ARTIFACTS_ATTR, default_dir
from search.runtime.optuna_compat import enable_heartbeat, rdb
from search.runtime.outage import DEFAULT_RETRY_SECONDS, Outage, retry_override
from search.runtime.proxy import is_proxy
from search.runtime.retrying import retry_storage
from search.runtime.storage import StudyLock, open_storage, parse_url, resolve_url
from search.space import seed_trials
from search.study_data import StudyData
from search.training.weights import weights_identities

CONFIG_ATTR = "config"
FINGERPRINT_ATTR = "data_fingerprint"
COUNTS_ATTR = "data_counts"
DROPPED_ATTR = "test_duplicates_dropped"
LEGACY_DEDUP = "exact-train-val"  # the policy of studies whose stored config names none
CLASSES_ATTR = "classes"
BUDGET_ATTR = "trials"
TRIAL_CONFIG_ATTR = "trial_config"
WEIGHTS_ATTR = "weights"  # each backbone's weights file, by its sha256 (see ensure_weights)
RUNTIME_ATTR = "runtime"  # on a trial: the Keras version, backend and device that ran it


def versions() -> dict[str, str]:
    """Versions of the libraries that decide a result."""
    out = {"python": platform.python_version()}
    for name in ("tumor-search", "optuna", "optuna-integration", "keras", "tensorflow", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def make_sampler(config: StudyConfig, trial_number: int = 0) -> optuna.samplers.BaseSampler:
    """The config's sampler, seeded for the trial numbered `trial_number`.

    Samplers keep their random state in the process; a fixed seed in every worker process
    would draw the same "random" configurations in each. Seeding per trial number keeps
    studies reproducible and workers distinct.
    """
    s = config.sampler
    seed = None if s.seed is None else s.seed + trial_number
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.name == "nsga2":  # its first generation is its random start
        population = max(2, s.n_startup_trials)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=s.n_startup_trials, multivariate=s.multivariate
    )


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p, epochs = config.pruner, config.training.epochs
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=epochs, reduction_factor=p.reduction_factor
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    if p.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
    )


def study_exists(storage: Any, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


@dataclass(frozen=True)
class CreateResult:
    study: optuna.Study
    created: bool
    enqueued: int


def create_study(
    name: str,
    storage_url: str | None,
    config: StudyConfig,
    data: StudyData,
    artifacts: str | os.PathLike[str] | None = None,
) -> CreateResult:
    """Create the storage tables and the study once, before any worker starts.

    Writes the whole config, the data fingerprint and counts and each backbone's weights
    hash into the study's user attributes and enqueues the config's `enqueue` entries, then
    the seed study's configurations that fit the space. An existing study with the same config and data is left as it is; a
    different one is an error.

    Raises:
        StorageError: the storage cannot be opened.
        InputError: a study of that name exists with another config or data.
    """
    from search.constraints import check_classes

    check_classes(config.objective.constraints, data.classes)  # before anything is made
    weights = weights_identities(config)
    storage = open_storage(storage_url, create=True)
    # Under the study's lock, so that no other process sees the study before its config
    # and fingerprint (readers of a study without them wait for this lock; see load_study).
    with StudyLock(storage, name).hold():
        if study_exists(storage, name):
            study = optuna.load_study(study_name=name, storage=storage)
            _check_same(study, config, data)
            return CreateResult(study, False, 0)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=config.objective.directions,
            sampler=make_sampler(config),
            pruner=make_pruner(config),
        )
        try:
            pause("study-row-written")
            study.set_user_attr(CONFIG_ATTR, config.to_dict())
            study.set_user_attr(FINGERPRINT_ATTR, data.fingerprint)
            study.set_user_attr(WEIGHTS_ATTR, weights)
            study.set_user_attr(COUNTS_ATTR, data.counts())
            study.set_user_attr(DROPPED_ATTR, len(data.manifest.dropped))
            study.set_user_attr(CLASSES_ATTR, list(data.classes))
            study.set_user_attr(BUDGET_ATTR, config.trials)
            study.set_user_attr("created_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
            study.set_user_attr("versions", versions())
            study.set_user_attr(ARTIFACTS_ATTR, str(_artifacts_dir(artifacts, storage_url)))
            # The config's own first, then the seed study's, within the trial budget.
            first = [(dict(p), "enqueued") for p in config.enqueue]
            first += [(p, "seed_config") for p in seed_trials(config.space, config.data.image_size)]
            seeds = first[: config.trials]
            for params, attr in seeds:
                study.enqueue_trial(params, user_attrs={attr: True}, skip_if_exists=True)
            _dashboard_labels(study, config)
        except BaseException:
            optuna.delete_study(study_name=name, storage=storage)  # never leave a half-made study
            raise
    return CreateResult(study, True, len(seeds))


def _artifacts_dir(artifacts: str | os.PathLike[str] | None, storage_url: str | None) -> Path:
    """The artifact folder to record: as asked, else the storage's default
    (`search.runtime.artifacts`)."""
    if artifacts is not None:
        return Path(artifacts).expanduser().resolve()
    return default_dir(resolve_url(storage_url))


def _dashboard_labels(study: optuna.Study, config: StudyConfig) -> None:
    """Name the objective and describe the study in optuna-dashboard."""
    import warnings

    try:
        import optuna_dashboard
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(config.objective.names)
    backbones = ", ".join(config.space.backbones)
    optuna_dashboard.save_note(
        study,
        f"# {study.study_name}\n\n"
        f"{_objective_text(config)} Budget: {config.trials} trials.\n\n"
        f"Backbones: {backbones}. Weights: `{config.weights}`. Input: {config.data.image_size}px, "
        f"split `{config.data.split}` (seed {config.data.seed}).\n\n"
        f"Sampler `{config.sampler.name}`, pruner `{config.pruner.name}`, up to "
        f"{config.training.epochs} epochs per trial.\n",
    )


def _objective_text(config: StudyConfig) -> str:
    goal = config.objective
    if not goal.is_multi:
        return f"Objective: best **{goal.metric}** on the validation split ({goal.direction})."
    parts = ", ".join(f"**{n}** ({d})" for n, d in zip(goal.names, goal.directions, strict=True))
    return f"Objectives: {parts}; the Pareto page shows the front."


def _check_same(study: optuna.Study, config: StudyConfig, data: StudyData) -> None:
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise InputError(f"study {study.study_name!r} exists but was not made by tumor-search")
    theirs = _stored_config(stored, f"study {study.study_name}")
    # The budget may change on resume and the data may live elsewhere; the rest must match.
    same = theirs.with_overrides(trials=config.trials, data_path=config.data.path)
    if same.to_dict() != config.to_dict():
        raise InputError(
            f"study {study.study_name!r} already exists with a different config; "
            "choose another --study name or resume it without --config"
        )
    if study.user_attrs.get(FINGERPRINT_ATTR) != data.fingerprint:
        raise InputError(
            f"study {study.study_name!r} already exists with different data (fingerprint "
            f"{str(study.user_attrs.get(FINGERPRINT_ATTR))[:12]}, here {data.fingerprint[:12]})"
        )


def load_study(name: str, storage: Any) -> optuna.Study:
    """Open an existing tumor-search study.

    Raises:
        InputError: no study of that name (the message lists the ones there are).
    """
    if not study_exists(storage, name):
        names = sorted(s.study_name for s in storage.get_all_studies())
        where = parse_url(storage.url).masked
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise InputError(f"study {name!r} not found in {where}{known}")
    study = optuna.load_study(study_name=name, storage=storage)
    if CONFIG_ATTR not in study.user_attrs:
        with StudyLock(storage, name).hold():  # its creator may still be writing it
            study = optuna.load_study(study_name=name, storage=storage)
    if CONFIG_ATTR not in study.user_attrs:
        raise InputError(f"study {name!r} was not made by tumor-search (no config attribute)")
    return study


def study_config(study: optuna.Study) -> StudyConfig:
    return _stored_config(study.user_attrs[CONFIG_ATTR], f"study {study.study_name}")


def _stored_config(raw: dict[str, Any], source: str) -> StudyConfig:
    """A config stored in a study. One without a duplicate policy was made before the policy
    was recorded, and keeps the policy of that version, so its fingerprint still matches."""
    data = raw.get("data") or {}
    if "dedup" not in data:
        raw = {**raw, "data": {**data, "dedup": LEGACY_DEDUP}}
    return StudyConfig.from_dict(raw, source=source)


def open_study(
    name: str, storage_url: str | None, worker: bool = False
) -> tuple[optuna.Study, StudyConfig]:
    """Open an existing study with the sampler and pruner its config names.

    Args:
        name: The study.
        storage_url: Its storage.
        worker: For a worker: wait for a storage that is not up yet, turn on the heartbeat
            the config asks for, and retry storage calls through an outage.
    """
    override = retry_override() if worker else None
    wait = (DEFAULT_RETRY_SECONDS if override is None else override) if worker else None
    storage = open_storage(storage_url, wait=wait, proxy=worker)
    study = load_study(name, storage)
    config = study_config(study)
    proxied = is_proxy(storage)
    if worker and not proxied:  # through a proxy, the proxy keeps the heartbeats
        hb = config.heartbeat
        enable_heartbeat(storage, hb.interval, hb.grace_period, hb.max_retry)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(config), pruner=make_pruner(config)
    )
    if worker:
        seconds = config.storage.retry_seconds if override is None else override
        between = None if proxied else rdb(storage).remove_session
        outage = Outage(describe_storage(storage_url), seconds, between)
        retry_storage(study, outage)
    return study, config


def budget(study: optuna.Study) -> int:
    return int(study.user_attrs.get(BUDGET_ATTR, 0))


def superseded(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that a retry (heartbeat or interrupt) replaced."""
    out: set[int] = set()
    for t in trials:
        out.update(int(n) for n in t.system_attrs.get("retry_history", []))
    return out


# Study user attributes that `finalize` writes: its summary, and its winner's out-of-fold
# logits (search.results.finalize; export and train-best read them).
FINALIZE_ATTR = "finalize"
OOF_ATTR = "finalize_oof"
# A RUNNING trial that never recorded a heartbeat (search.runtime.claim.fail_orphans).
ORPHAN_REASON = "never ran: started by a claim that did not finish (no heartbeat)"


def never_ran(trial: FrozenTrial) -> bool:
    """A failed orphan: a claim's double, or a claim whose worker died within it."""
    from search.runtime.optuna_compat import FAIL_REASON_ATTR

    return (
        trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON_ATTR) == ORPHAN_REASON
    )


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count against the budget: all but the failed ones a retry replaced and
    the orphans that never ran."""
    replaced = superseded(trials)
    return sum(1 for t in trials if t.number not in replaced and not never_ran(t))


def describe_storage(storage_url: str | None) -> str:
    return parse_url(resolve_url(storage_url)).masked


def log_created(result: CreateResult, storage_url: str | None) -> None:
    where = describe_storage(storage_url)
    if result.created:
        log(
            f"created study {result.study.study_name!r} in {where}; enqueued {result.enqueued} configurations to run first"
        )
    else:
        done = len(
            result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        )
        log(f"resuming study {result.study.study_name!r} in {where} ({done} trials finished)")
