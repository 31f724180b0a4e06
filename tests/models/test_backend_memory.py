"""A process that trains one model after another keeps no earlier model's graphs.

On TensorFlow, Keras's optimizer registers a gradient function per traced train step in a
global registry, and that function holds the step's whole graph (60-500 MB a model on CPU,
which once made workers restart their process every trial or two). `release_models` drops
those entries; here a trained model's graphs must be gone once it is released.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from models.backend import backend_name, keras_module, release_models
from models.builder import build_training_state, create_model, encode_targets
from models.trial_config import TrialConfig


def _graphs() -> list[object]:
    from tensorflow.python.framework.func_graph import FuncGraph

    return [o for o in gc.get_objects() if isinstance(o, FuncGraph)]


def _train_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 64)
    config = TrialConfig(
        backbone="small_cnn",
        head_depth=1,
        head_width=16,
        learning_rate=1e-3,
        batch_size=32,
        fine_tune=1.0,
    )
    model = create_model(config, 4, 32, "none", jit_compile=False)
    targets = encode_targets(y, 4, config)
    build_training_state(model, x, targets)
    model.fit(x, targets, validation_data=(x[:32], targets[:32]), epochs=1, verbose=0)


@pytest.mark.skipif(backend_name() != "tensorflow", reason="the registry is TensorFlow's")
def test_released_models_leave_no_traced_graphs_behind() -> None:
    keras_module()
    release_models()
    before = {id(g) for g in _graphs()}
    _train_one()
    made = [weakref.ref(g) for g in _graphs() if id(g) not in before]
    assert made, "training traced no graph"
    release_models()
    alive = [ref() for ref in made if ref() is not None]
    assert not alive, f"{len(alive)} graphs of a released model still alive: {alive[:3]}"


def test_release_models_runs_on_every_backend() -> None:
    _train_one()
    release_models()  # clears Keras's session everywhere; nothing to unregister off TensorFlow
    _train_one()
    release_models()
