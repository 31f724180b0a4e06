"""What a trained model costs to deploy, measured as a trial does (`models.footprint`)."""

from __future__ import annotations

import pytest

from models.backend import keras_module
from models.footprint import FOOTPRINT_KEYS, describe, measure
from models.trial_config import TrialConfig

keras = keras_module()


@pytest.mark.backends
def test_footprint_of_a_small_model() -> None:
    from models.builder import create_model

    config = TrialConfig(backbone="small_cnn", head_depth=1, head_width=16, fine_tune=1.0)
    model = create_model(config, 4, 32, "none")
    footprint = measure(model, 32, calls=5)
    assert footprint.calls == 5
    assert 0.0 < footprint.latency_ms < 5_000
    assert footprint.params_m == pytest.approx(model.count_params() / 1e6)
    # Every float32 weight and a small header per array; no optimizer state (Adam's two
    # moments would triple it).
    weights = model.count_params() * 4 / 1e6
    assert weights < footprint.size_mb < 1.1 * weights + 0.05
    values = footprint.to_dict()
    assert set(FOOTPRINT_KEYS) <= set(values)
    assert describe(values).startswith(f"{footprint.latency_ms:.2f} ms per image at batch 1, ")
    assert describe({}) is None
    with pytest.raises(ValueError, match="calls must be at least 1"):
        measure(model, 32, calls=0)
