"""The dependency floors in pyproject.toml match the Optuna and Keras APIs the code uses.

Every Optuna / optuna-integration / optuna-dashboard / Keras name that ``search``, ``models``
and ``bench`` rely on is looked up here, one parametrised case per name, so that an
installation that lacks one names it instead of stopping every worker with an
AttributeError. Keyword arguments the code passes are checked the same way (a Keras layer
given a keyword it does not know fails only when the model is built).

`FIRST_RELEASE` records, per package, the first release that has all of them; the floors in
pyproject.toml may not be lower. The floors were checked once together in a throwaway
virtualenv that installed exactly them (see the issue's closing note).
"""

from __future__ import annotations

import importlib
import inspect
import tomllib
import warnings
from functools import reduce
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from models.registry import list_backbones
from tests.conftest import ROOT

# The first release of each package that has everything below; the evidence is the symbol
# (or keyword) that the release before it lacks.
FIRST_RELEASE: dict[str, str] = {
    # Trial.set_constraint, with which a finished trial records the objective's constraints
    # before it is told (search.constraints), is new in 5.0.0: 4.9.0's Trial has no
    # such method (constraints there come only from a sampler's constraints_func; the method
    # came with optuna/optuna#6754, "official support for constrained optimization" in v5.0).
    # (RDBStorage.heartbeat_stale_trial_callback, read by fail_stale_trials, is new in 4.9.0.)
    "optuna": "5.0.0",
    # optuna_integration.KerasPruningCallback is importable from the package itself from
    # 3.6.0 (3.2 to 3.5 have only optuna_integration.keras.KerasPruningCallback, deprecated).
    "optuna-integration": "3.6.0",
    # optuna_dashboard.get_note is new in 0.9.1, and 0.9.2 is the first to show the objective
    # name that Study.set_metric_names stores (tests/search/test_dashboard.py checks it).
    "optuna-dashboard": "0.9.2",
    # keras.layers.RandomContrast(value_range=...) is new in 3.8.0.
    "keras": "3.8.0",
}

# "module:attribute.path": looked up with getattr from the imported module.
OPTUNA_SYMBOLS: list[str] = [
    "optuna:create_study",
    "optuna:create_trial",
    "optuna:load_study",
    "optuna:delete_study",
    "optuna:Study",
    "optuna:Study.add_trial",
    "optuna:Study.ask",
    "optuna:Study.tell",
    "optuna:Study.enqueue_trial",
    "optuna:Study.set_metric_names",
    "optuna:Study.set_user_attr",
    "optuna:Study.get_trials",
    "optuna:Study.best_trial",
    "optuna:trial.Trial.set_constraint",
    "optuna:trial.FrozenTrial.constraints",
    "optuna:Study.best_value",
    "optuna:Study.trials",
    "optuna:Study.direction",
    "optuna:Study.user_attrs",
    "optuna:Trial",
    "optuna:Trial.set_user_attr",
    "optuna:TrialPruned",
    "optuna:logging.set_verbosity",
    "optuna:logging.WARNING",
    "optuna:exceptions.ExperimentalWarning",
    "optuna:exceptions.StorageInternalError",
    "optuna:storages.RDBStorage",
    "optuna:storages.RDBStorage.get_all_studies",
    "optuna:storages.RDBStorage.get_trial",
    "optuna:storages.RDBStorage.set_trial_user_attr",
    "optuna:storages.RDBStorage.record_heartbeat",
    "optuna:storages.RDBStorage.remove_session",
    "optuna:storages.RDBStorage.get_heartbeat_interval",
    "optuna:storages.RDBStorage.get_heartbeat_stale_trial_callback",
    "optuna:storages.fail_stale_trials",
    "optuna:samplers.BaseSampler",
    "optuna:samplers.RandomSampler",
    "optuna:samplers.TPESampler",
    "optuna:samplers.GPSampler",
    "optuna:pruners.BasePruner",
    "optuna:pruners.HyperbandPruner",
    "optuna:pruners.SuccessiveHalvingPruner",
    "optuna:pruners.MedianPruner",
    "optuna:pruners.NopPruner",
    "optuna:study.StudyDirection.MAXIMIZE",
    "optuna:trial.BaseTrial",
    "optuna:trial.BaseTrial.suggest_categorical",
    "optuna:trial.BaseTrial.suggest_int",
    "optuna:trial.BaseTrial.suggest_float",
    "optuna:trial.FixedTrial",
    "optuna:trial.FrozenTrial",
    "optuna:trial.FrozenTrial.system_attrs",
    "optuna:trial.FrozenTrial.distributions",
    "optuna:trial.TrialState.COMPLETE",
    "optuna:trial.TrialState.PRUNED",
    "optuna:trial.TrialState.FAIL",
    "optuna:trial.TrialState.RUNNING",
    "optuna:trial.TrialState.WAITING",
    "optuna:visualization.plot_optimization_history",
    "optuna:visualization.plot_param_importances",
    "optuna:visualization.plot_parallel_coordinate",
    "optuna_integration:KerasPruningCallback",
    "optuna_dashboard:save_note",
    "optuna_dashboard:get_note",
    "optuna_dashboard:run_server",
]

KERAS_SYMBOLS: list[str] = [
    "keras:__version__",
    "keras:Input",
    "keras:Model",
    "keras:Model.compile",
    "keras:Model.fit",
    "keras:Model.predict",
    "keras:Model.save",
    "keras:Model.get_layer",
    "keras:Model.count_params",
    "keras:Model.get_weights",
    "keras:Model.set_weights",
    "keras:Model.load_weights",
    "keras:Model.save_weights",
    "keras:Sequential",
    "keras:backend.backend",
    "keras:backend.clear_session",
    "keras:callbacks.Callback",
    "keras:callbacks.EarlyStopping",
    "keras:mixed_precision.set_global_policy",
    "keras:mixed_precision.dtype_policy",
    "keras:utils.set_random_seed",
    "keras:saving.register_keras_serializable",
    "keras:saving.load_model",
    "keras:optimizers.Adam",
    "keras:optimizers.AdamW",
    "keras:losses.CategoricalCrossentropy",
    "keras:losses.SparseCategoricalCrossentropy",
    "keras:layers.Layer",
    "keras:layers.Activation",
    "keras:layers.BatchNormalization",
    "keras:layers.Conv2D",
    "keras:layers.Dense",
    "keras:layers.Dropout",
    "keras:layers.GlobalAveragePooling2D",
    "keras:layers.Identity",
    "keras:layers.MaxPooling2D",
    "keras:layers.Normalization",
    "keras:layers.RandomContrast",
    "keras:layers.RandomFlip",
    "keras:layers.RandomRotation",
    "keras:layers.RandomTranslation",
    "keras:layers.RandomZoom",
    "keras:layers.ReLU",
    "keras:layers.Rescaling",
    # Batches of one shape on JAX (search.training.batching), the feature cache's extraction.
    "keras:utils.PyDataset",
    "keras:Model.predict_on_batch",
    "keras:ops.convert_to_numpy",
    "keras:ops.convert_to_tensor",
    # models.backend.set_seed: keras.utils.set_random_seed's own steps without TensorFlow.
    "keras.src.backend.common.global_state:set_global_attribute",
    "keras.src.random.seed_generator:GLOBAL_SEED_GENERATOR",
    "keras.src.utils.rng_utils:GLOBAL_RANDOM_SEED",
] + [
    # Every Keras application's constructor and the preprocess_input the tests compare with
    # (a record with a `keras.applications` module is one; ours have none).
    f"keras:applications.{name}"
    for record in list_backbones()
    if record.module is not None
    for name in (record.constructor, f"{record.module}.preprocess_input")
]

# "module:attribute.path" -> keyword arguments the code passes to it by name.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "optuna:create_study": ("study_name", "storage", "direction", "sampler", "pruner"),
    "optuna:load_study": ("study_name", "storage", "sampler", "pruner"),
    "optuna:delete_study": ("study_name", "storage"),
    "optuna:create_trial": ("state", "params", "distributions", "user_attrs", "system_attrs"),
    "optuna:Study.tell": ("state",),
    "optuna:Study.enqueue_trial": ("user_attrs", "skip_if_exists"),
    "optuna:Study.get_trials": ("deepcopy", "states"),
    "optuna:storages.RDBStorage": ("engine_kwargs", "skip_table_creation"),
    "optuna:samplers.RandomSampler": ("seed",),
    "optuna:samplers.TPESampler": ("seed", "n_startup_trials"),
    "optuna:samplers.GPSampler": ("seed", "n_startup_trials"),
    "optuna:pruners.HyperbandPruner": ("min_resource", "max_resource", "reduction_factor"),
    "optuna:pruners.SuccessiveHalvingPruner": ("min_resource", "reduction_factor"),
    "optuna:pruners.MedianPruner": ("n_startup_trials", "n_warmup_steps"),
    "optuna:trial.BaseTrial.suggest_int": ("step", "log"),
    "optuna:trial.BaseTrial.suggest_float": ("step", "log"),
    "optuna:visualization.plot_optimization_history": ("target_name",),
    "optuna:visualization.plot_param_importances": ("params", "target_name"),
    "optuna:visualization.plot_parallel_coordinate": ("target_name",),
    "optuna_dashboard:run_server": ("host", "port"),
    "keras:Model.compile": ("optimizer", "loss", "metrics", "jit_compile"),
    "keras:Model.fit": (
        "validation_data",
        "epochs",
        "batch_size",
        "class_weight",
        "callbacks",
        "shuffle",
        "verbose",
    ),
    "keras:Model.predict": ("batch_size", "verbose"),
    "keras:callbacks.EarlyStopping": ("monitor", "mode", "patience"),
    "keras:saving.register_keras_serializable": ("package",),
    "keras:saving.load_model": ("safe_mode", "compile"),
    "keras:optimizers.Adam": ("learning_rate",),
    "keras:optimizers.AdamW": ("learning_rate", "weight_decay"),
    "keras:losses.CategoricalCrossentropy": ("label_smoothing",),
    "keras:layers.Dense": ("use_bias",),
    "keras:layers.Normalization": ("mean", "variance"),
    "keras:layers.Rescaling": ("offset",),
    "keras:layers.RandomFlip": ("seed",),
    "keras:layers.RandomRotation": ("fill_mode", "seed"),
    "keras:layers.RandomZoom": ("fill_mode", "seed"),
    "keras:layers.RandomTranslation": ("fill_mode", "seed"),
    "keras:layers.RandomContrast": ("value_range", "seed"),
    **{
        f"keras:applications.{record.constructor}": (
            "input_shape",
            "include_top",
            "weights",
            "pooling",
        )
        for record in list_backbones()
        if record.module is not None
    },
}


def _module(name: str) -> ModuleType:
    if name in ("keras", "optuna_integration"):
        from models.backend import keras_module

        keras = keras_module()  # as the code imports it: quietly, backend configured
        if name == "keras":
            return keras
    return importlib.import_module(name)


def _resolve(symbol: str) -> Any:
    module, _, path = symbol.partition(":")
    return reduce(getattr, path.split("."), _module(module))


@pytest.mark.parametrize("symbol", OPTUNA_SYMBOLS + KERAS_SYMBOLS)
def test_symbol_exists(symbol: str) -> None:
    try:
        _resolve(symbol)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{symbol} is missing from the installed version: {exc}")


@pytest.mark.parametrize("symbol", sorted(KEYWORDS))
def test_keywords_accepted(symbol: str) -> None:
    """Named parameters, not swallowed by ``**kwargs`` (Keras' base Layer rejects those)."""
    parameters = inspect.signature(_resolve(symbol)).parameters
    missing = [name for name in KEYWORDS[symbol] if name not in parameters]
    assert not missing, f"{symbol} does not take {', '.join(missing)}"


def test_keyword_table_names_known_symbols() -> None:
    assert set(KEYWORDS) <= set(OPTUNA_SYMBOLS + KERAS_SYMBOLS)


def test_storage_and_study_internals_the_worker_uses(tmp_path: Path) -> None:
    """Instance attributes (set in constructors, so not on the classes) that the worker reads
    or sets, and that Optuna's heartbeat reads what `enable_heartbeat` sets."""
    import optuna

    from search.runtime.optuna_compat import enable_heartbeat, rdb

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'deps.db'}")
    try:
        for name in (
            "engine",
            "heartbeat_interval",
            "grace_period",
            "heartbeat_stale_trial_callback",
        ):
            assert hasattr(storage, name), f"RDBStorage has no attribute {name}"
        study = optuna.create_study(storage=storage)
        assert rdb(study._storage) is storage, "study._storage._backend is not the RDBStorage"
        enable_heartbeat(study._storage, interval=5, grace_period=10, max_retry=2)
        assert storage.get_heartbeat_interval() == 5
        callback = storage.get_heartbeat_stale_trial_callback()
        assert callback is not None and callback is storage.heartbeat_stale_trial_callback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Heartbeat ... is supposed to be used with optimize"
            trial = study.ask()
        assert isinstance(trial._trial_id, int)
        storage.record_heartbeat(trial._trial_id)
        storage.remove_session()
    finally:
        storage.engine.dispose()


def test_keras_pruning_callback_is_not_deprecated() -> None:
    """optuna-integration 3.2 to 3.5 have it in a submodule only, and warn at every trial
    that it goes."""
    import optuna

    _module("keras")
    from optuna_integration import KerasPruningCallback

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        KerasPruningCallback(optuna.trial.FixedTrial({}), "val_accuracy")


def _floors() -> dict[str, Requirement]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in requirements}


def _floor(requirement: Requirement) -> Version | None:
    lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else None


def test_installed_versions_satisfy_the_floors() -> None:
    for name, requirement in _floors().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is not installed but pyproject.toml asks for {requirement}")
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{name} {installed} is installed but pyproject.toml asks for {requirement}"
        )


@pytest.mark.parametrize("name", sorted(FIRST_RELEASE))
def test_floor_is_not_below_the_first_release_with_the_apis(name: str) -> None:
    requirement = _floors().get(name)
    assert requirement is not None, f"{name} is not among pyproject.toml's dependencies"
    floor = _floor(requirement)
    assert floor is not None and floor >= Version(FIRST_RELEASE[name]), (
        f"pyproject.toml allows {requirement}, but the code needs {name}>={FIRST_RELEASE[name]}"
    )
