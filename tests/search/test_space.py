from __future__ import annotations

import re

import optuna
import pytest

from models.trial_config import TrialConfig
from search.config import load_config
from search.space import SearchSpace, replay, seed_trials, suggest
from tests.conftest import ROOT


def test_suggest_returns_a_frozen_trial_config_and_replays_exactly() -> None:
    space = load_config("kaggle").space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        trial = study.ask()
        config = suggest(trial, space)
        assert isinstance(config, TrialConfig)
        study.tell(trial, 0.5)
        assert replay(study.trials[-1].params, space) == config
    with pytest.raises(AttributeError):
        config.backbone = "x"  # type: ignore[misc]


def test_fixed_values_are_not_sampled() -> None:
    space = SearchSpace.from_dict({"backbone": ["small_cnn"], "fine_tune": [1.0], "dropout": 0.2})
    trial = optuna.create_study().ask()
    config = suggest(trial, space)
    assert trial.params == {}
    assert (config.backbone, config.fine_tune, config.dropout) == ("small_cnn", 1.0, 0.2)


def test_seed_configurations_fit_the_space() -> None:
    seeds = seed_trials(load_config("kaggle").space, 224)
    assert [s["backbone"] for s in seeds] == ["mobilenet", "xception"]
    assert (
        seeds[0] | {"head_depth": 3, "head_width": 128, "dropout": 0.3, "learning_rate": 1e-5}
        == seeds[0]
    )
    assert seeds[1]["dropout"] == 0.5 and seeds[1]["learning_rate"] == 2e-5
    assert seed_trials(load_config("demo").space, 64) == []  # neither backbone in the demo space
    # Xception needs 71 px: at 64 px only MobileNet's configuration is enqueued.
    space = SearchSpace.from_dict(
        {"backbone": ["mobilenet", "xception"], "head_depth": {"low": 0, "high": 4}}
    )
    assert [s["backbone"] for s in seed_trials(space, 64)] == ["mobilenet"]


def test_only_space_py_calls_trial_suggest() -> None:
    pattern = re.compile(r"\.suggest_(categorical|int|float|uniform|loguniform|discrete_uniform)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("search", "models", "data", "bench")
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "space.py"
    ]
    assert offenders == []


def test_sampler_seed_follows_the_trial_number() -> None:
    """Workers (and restarted worker processes) share no random draws; a seed reproduces."""
    from search.runtime.study import make_sampler

    config = load_config("demo")

    def first_draw(number: int) -> dict:
        study = optuna.create_study(sampler=make_sampler(config, trial_number=number))
        trial = study.ask()
        suggest(trial, config.space)
        return trial.params

    assert first_draw(3) == first_draw(3)
    assert first_draw(3) != first_draw(4)


def test_a_feature_layer_every_backbone_lacks_is_a_config_error() -> None:
    from search.errors import ConfigError

    raw = {"backbone": ["xception", "mobilenet"], "feature_layer": ["top", "middle"]}
    with pytest.raises(ConfigError, match=r"space.feature_layer: backbone mobilenet has no "):
        SearchSpace.from_dict(raw)
    space = SearchSpace.from_dict(
        {"backbone": ["xception"], "feature_layer": ["top", "middle"], "feature_batchnorm": True}
    )
    trial = optuna.trial.FixedTrial({"backbone": "xception", "feature_layer": "middle"})
    config = suggest(trial, space)
    assert (config.feature_layer, config.feature_batchnorm) == ("middle", True)
    with pytest.raises(ConfigError, match="bad value 'yes' for feature_batchnorm"):
        SearchSpace.from_dict({"backbone": ["xception"], "feature_batchnorm": "yes"})


def test_enqueued_configurations_must_fit_the_space() -> None:
    """`enqueue` entries name parameters of the space with values it holds; each error is one
    line naming the entry and the key."""
    from search.config import StudyConfig
    from search.errors import ConfigError

    raw = load_config("demo").to_dict()
    good = [{"backbone": "small_cnn", "learning_rate": 1.0e-3}, {"head_depth": 2}]
    assert StudyConfig.from_dict(raw | {"enqueue": good}).enqueue == tuple(good)
    bad = {
        "a mapping": ({"backbone": "small_cnn"}, "enqueue: must be a list of mappings"),
        "out of range": ([{"learning_rate": 0.5}], "enqueue[0].learning_rate: 0.5 is outside"),
        "empty": ([{}, {"backbone": "xception"}], "enqueue[0]: must be a mapping"),
        "unknown": ([{"backbone": "small_cnn", "depth": 1}], "enqueue[0].depth: not a parameter"),
        "wrong type": ([{"head_depth": "two"}], "enqueue[0].head_depth: bad value 'two'"),
    }
    for case, (entries, fragment) in bad.items():
        with pytest.raises(ConfigError) as caught:
            StudyConfig.from_dict(raw | {"enqueue": entries})
        assert fragment in str(caught.value) and "\n" not in str(caught.value), case
    with pytest.raises(ConfigError, match=r"enqueue\[1\].backbone: 'xception' is outside"):
        StudyConfig.from_dict(raw | {"enqueue": [{"head_depth": 1}, {"backbone": "xception"}]})


def test_a_multivariate_tpe_sampler_models_the_parameters_jointly() -> None:
    """`sampler.multivariate: true` gives TPE's joint model of the parameters, which draws
    from the whole space once its random start is over."""
    from search.config import StudyConfig
    from search.runtime.study import make_sampler

    raw = load_config("demo").to_dict()
    raw["sampler"] = {"name": "tpe", "seed": 0, "n_startup_trials": 3, "multivariate": True}
    config = StudyConfig.from_dict(raw, source="cfg")
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config))
    for _ in range(8):
        trial = study.ask()
        drawn = suggest(trial, config.space)
        study.tell(trial, -abs(drawn.dropout - 0.3) - (drawn.backbone != "small_cnn"))
    assert study.sampler._multivariate  # the sampler the config asked for
    assert not make_sampler(load_config("demo"))._multivariate  # Optuna's default otherwise
    assert {t.params["backbone"] for t in study.trials} <= {"small_cnn", "mobilenet_v3_small"}
