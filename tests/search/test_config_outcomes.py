"""The config reads a fixed set of configs exactly as the hand-written reader did.

`config_outcomes.json` holds about 1,400 configs, each a base (TINY_CONFIG or a
shipped config) with one or two changes: every key of every section set to values of the
wrong type, out of range, unknown words, null, NaN, a section of the wrong type, unknown
keys, missing sections; and, for each, the outcome that the reader before pydantic (commit
f1dcbf0) gave: its error message, or a digest of the config it read (`to_dict` as JSON,
so 1 and 1.0 differ). Recorded with ``python -m tests.search.test_config_outcomes`` on that
commit; `CHANGED` lists the outcomes changed on purpose since. Re-recorded (CHANGED's keys
keep their first outcome) when the config gained `enqueue`, `worker.max_memory_growth`
went from 0.08 to 0.25, `data` gained patient groups (`groups`, `group_pattern`) and the
DICOM and NIfTI settings, `training` gained `refit_epochs`, `worker` gained `kept_models`
and `sampler` gained `multivariate`: every config read changed its digest, unknown-key
errors name the new keys among the allowed ones, and nothing else differed (a new key also
draws other pairs of changes among the cases).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.config import CONFIG_DIR, StudyConfig
from search.errors import ConfigError
from tests.search.helpers import TINY_CONFIG

RECORDED = Path(__file__).with_name("config_outcomes.json")
BASES: dict[str, Any] = {
    "tiny": TINY_CONFIG,
    "demo-pareto": yaml.safe_load((CONFIG_DIR / "demo-pareto.yaml").read_text()),
}
# A NaN timeout was taken (and never reached); it is refused like a timeout of 0.
CHANGED = {
    json.dumps(["tiny", [["set", "timeout", float("nan")]]]): (
        "error: cfg: timeout: must be positive, got nan"
    ),
}

NAN, INF = float("nan"), float("inf")
VALUES: list[Any] = [None, True, 0, -1, 1, 2, 0.5, 1.5, NAN, -INF, "x", "", [1], {"k": 1}]
KEYS = {
    "": ["name", "trials", "timeout", "weights"],
    "data": [
        "path",
        "split",
        "seed",
        "val_fraction",
        "test_fraction",
        "image_size",
        "dedup",
        "near_threshold",
    ],
    "training": [
        "epochs",
        "early_stopping_patience",
        "class_weights",
        "augmentation",
        "seed",
        "feature_cache",
        "mixed_precision",
        "xla",
        "lr_schedule",
    ],
    "training.augmentation": ["flip", "rotation", "zoom", "translation", "contrast"],
    "sampler": ["name", "seed", "n_startup_trials", "multivariate"],
    "pruner": ["name", "n_startup_trials", "n_warmup_steps", "min_resource", "reduction_factor"],
    "objective": ["metric", "metrics", "constraints"],
    "heartbeat": ["interval", "grace_period", "max_retry"],
    "worker": ["max_memory_growth", "kept_models"],
    "storage": ["retry_seconds"],
}
# Values that mean something at one key (words, edges of ranges).
AT: dict[str, list[Any]] = {
    "weights": ["imagenet", "none", "scratch", "w.h5", "w.txt", " imagenet "],
    "data.split": ["official", "pooled", "random"],
    "data.dedup": ["near", "exact", "off", "none"],
    "data.image_size": [15, 16, 31, 32, 70, 71, 1024, 1025],
    "data.near_threshold": [64, 65],
    "data.val_fraction": [0.85, 0.99],
    "training.class_weights": ["balanced"],
    "training.lr_schedule": ["constant", "step"],
    "training.mixed_precision": ["on", "off", "auto", False],
    "training.augmentation": ["none", False, {"flip": True, "zoom": 0.2}, {"spin": 1}],
    "training.augmentation.rotation": [0.0, 0.99, 1.0, INF],
    "sampler.name": ["random", "nsga2", "bayes"],
    "pruner.name": ["hyperband", "successive_halving", "none", "x"],
    "objective.metric": ["val_loss", "macro_f1", "latency_ms", "f1"],
    "objective.metrics": [
        ["val_accuracy"],
        ["val_accuracy", "latency_ms"],
        ["latency_ms", "size_mb"],
        ["val_loss", "val_loss"],
        ["x", "val_loss"],
        [1, "val_loss"],
        ["latency_ms", "macro_f1"],
        "val_accuracy",
    ],
    "objective.constraints": [
        {"min_recall": {"glioma": 0.5}},
        {"min_recall": {"glioma": 1.5}},
        {"max_latency_ms": 20},
        {"max_x": 1},
        {"min_recall": []},
        {"max_size_mb": "s"},
        {},
    ],
    "heartbeat.interval": [0, 3, 20],
    "heartbeat.grace_period": [1, 3, 61],
    "storage.retry_seconds": [0, INF],
    "space": [
        {"backbone": ["nope"]},
        {"backbone": ["xception"], "fine_tune": [1.0]},
        {"backbone": ["small_cnn"], "fine_tune": [0.0, 1.0]},
        {"dropout": {"low": 0, "high": 1.5}},
    ],
}


def changes() -> list[list[list[Any]]]:
    """Each single change: set a key to a value, drop it, or add an unknown key."""
    out: list[list[list[Any]]] = []
    for section, keys in KEYS.items():
        for key in keys:
            path = f"{section}.{key}" if section else key
            out += [[["set", path, v]] for v in [*VALUES, *AT.get(path, [])]]
            out.append([["del", path]])
        if section:
            out += [[["set", section, v]] for v in [*VALUES, *AT.get(section, [])]]
            out += [[["set", f"{section}.zz", 1]], [["set", f"{section}.aa", 1]]]
            out.append([["del", section]])
    out += [[["set", "space", v]] for v in AT["space"]]
    out += [[["del", "space"]], [["set", "colour", "blue"]]]
    return out


def cases() -> list[list[Any]]:
    """[base, changes]: every single change on TINY_CONFIG, those of the sections that a
    multi-objective study reads otherwise on demo-pareto, then 300 pairs of changes."""
    singles = changes()
    multi = [c for c in singles if c[0][1].split(".")[0] in ("objective", "pruner", "sampler")]
    out = [["tiny", c] for c in [[], *singles]] + [["demo-pareto", c] for c in [[], *multi]]
    rng = random.Random(7)
    out += [["tiny", a + b] for a, b in (rng.sample(singles, 2) for _ in range(300))]
    return out


def apply(base: str, change: list[list[Any]]) -> Any:
    raw = copy.deepcopy(BASES[base])
    for op, path, *value in change:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if op == "set":
            node[last] = copy.deepcopy(value[0])
        else:
            node.pop(last, None)
    return raw


def outcome(raw: Any) -> str:
    """``error: <message>``, or ``ok: <digest of the config read>``."""
    try:
        config = StudyConfig.from_dict(raw, source="cfg")
    except ConfigError as exc:
        return f"error: {exc}"
    text = json.dumps(config.to_dict(), sort_keys=True)
    return f"ok: {hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _recorded() -> dict[str, str]:
    return json.loads(RECORDED.read_text())


def test_the_cases_are_those_recorded() -> None:
    assert set(_recorded()) == {json.dumps(c) for c in cases()}


def test_every_outcome_is_the_recorded_one() -> None:
    differ = []
    for key, expected in _recorded().items():
        base, change = json.loads(key)
        got = outcome(apply(base, change))
        if got != CHANGED.get(key, expected):
            differ.append(f"{key}\n  expected {expected}\n  got      {got}")
    assert not differ, f"{len(differ)} outcomes differ:\n" + "\n".join(differ[:20])


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_the_changed_outcomes_were_recorded_otherwise(key: str) -> None:
    assert _recorded()[key] != CHANGED[key]


def test_errors_are_one_line_and_name_the_source() -> None:
    errors = [o for o in _recorded().values() if o.startswith("error: ")]
    assert len(errors) > 800
    assert all(o.startswith("error: cfg: ") and "\n" not in o for o in errors)


if __name__ == "__main__":  # record: python -m tests.search.test_config_outcomes
    recorded = {json.dumps(c): outcome(apply(*c)) for c in cases()}
    recorded.update({key: _recorded()[key] for key in CHANGED})  # what they were
    json.dump(recorded, sys.stdout, indent=0, allow_nan=True)
