"""bench/real.py without real data: its study config is valid and shares only the feature
layers every backbone has; its table ends with the line scripts read."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.real import config  # noqa: E402
from bench.real_table import render  # noqa: E402
from search.config import StudyConfig  # noqa: E402
from search.space import SearchSpace  # noqa: E402


@pytest.mark.parametrize(
    ("backbones", "layers"),
    [(["xception"], ["top", "middle", "block13"]), (["xception", "mobilenet"], ["top"])],
)
def test_the_space_holds_the_feature_layers_every_backbone_has(
    backbones: list[str], layers: list[str]
) -> None:
    raw = config(Path("/data"), backbones, 40, 224)
    assert raw["space"]["feature_layer"] == layers
    SearchSpace.from_dict(raw["space"])  # valid: no ConfigError
    assert raw["data"]["split"] == "pooled" and raw["data"]["dedup"] == "near"
    assert StudyConfig.from_dict(raw).trials == 40


def _interval(value: float) -> dict[str, float]:
    return {"value": value, "lower": value - 0.01, "upper": value + 0.01}


def _metrics(accuracy: float) -> dict:
    per_class = {"glioma": {k: _interval(0.9) for k in ("sensitivity", "specificity", "f1")}}
    calibration = {f"{m}_{w}": 0.1 for m in ("nll", "brier", "ece") for w in ("before", "after")}
    return {
        "trial": 3,
        "test": {"accuracy": accuracy},
        "intervals": {
            "accuracy": _interval(accuracy),
            "balanced_accuracy": _interval(0.9),
            "macro_f1": _interval(0.9),
            "per_class": per_class,
        },
        "calibration": {"test": calibration, "applied": False, "temperature": 1.0},
    }


def test_the_table_ends_with_the_line_scripts_read() -> None:
    result = {
        "data": "/data",
        "backbones": ["xception"],
        "trials": 40,
        "image_size": 224,
        "check": {"splits": {"train": {"glioma": 10}, "val": {"glioma": 3}, "test": {"glioma": 4}}},
        "seconds": {"run": 100.0},
        "total_seconds": 120.0,
        "extraction": {"images": 13.0, "seconds": 1.0, "per_second": 13.0},
        "computed_after_run": {"finalize": 0},
        "plain": _metrics(0.9),
        "final": _metrics(0.9654),
        "final_export": {"params": {"feature_layer": "block13"}},
    }
    text = render(result)
    assert text.splitlines()[-1] == "bench-real test_accuracy (CPU): 0.965"
    assert len(re.findall(r"^bench-real test_accuracy \(CPU\): ", text, re.M)) == 1
    assert "| test accuracy | 0.900 [0.890, 0.910] | 0.965 [0.955, 0.975] |" in text
    assert "| train | 10 | 10 |" in text and "finalize 0" in text
