"""The GPU path: inert on a CPU (float32 policy, no XLA), on whatever machine runs the tests."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from models.backend import (
    configure_precision,
    gpu_count,
    installed_backends,
    keras_module,
    use_xla,
)
from tests.conftest import ROOT

# Run in a fresh process with every accelerator hidden, so that the CPU behaviour is checked
# on a GPU machine too (CUDA_VISIBLE_DEVICES for TensorFlow and torch, JAX_PLATFORMS for JAX).
_CPU_ONLY_CHECK = """
from models.backend import configure_precision, gpu_count, keras_module, use_xla

keras = keras_module()
assert gpu_count() == 0, gpu_count()
assert configure_precision("auto") == "float32"
assert keras.mixed_precision.dtype_policy().name == "float32"
assert configure_precision("on") == "mixed_float16"
assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
assert configure_precision("off") == "float32"
assert keras.mixed_precision.dtype_policy().name == "float32"
# JAX runs its steps op by op without jit, so `auto` compiles there even on a CPU.
assert use_xla("auto") is (keras.backend.backend() == "jax")
assert use_xla("on") is True and use_xla("off") is False
print("cpu-only ok")
"""


def _backend_gpus() -> int:
    """GPUs as the Keras backend's own library lists them."""
    backend = keras_module().backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return len([d for d in jax.devices() if d.platform == "gpu"])
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def test_auto_settings_stay_off_without_a_gpu() -> None:
    """With the accelerators hidden, `auto` means float32 and no XLA; `on`/`off` still obey."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _CPU_ONLY_CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu-only ok" in result.stdout


def test_auto_settings_follow_the_accelerator_of_this_machine() -> None:
    """`gpu_count` agrees with the backend, and `auto` turns mixed precision and XLA on
    exactly when there is a GPU (0 here, 1+ on a GPU machine)."""
    keras = keras_module()
    gpus = gpu_count()
    assert gpus == _backend_gpus()
    try:
        assert configure_precision("auto") == ("mixed_float16" if gpus else "float32")
        assert keras.mixed_precision.dtype_policy().name == ("mixed_float16" if gpus else "float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    backend = keras.backend.backend()
    assert use_xla("auto") is (backend == "jax" or (backend == "tensorflow" and gpus > 0))


_LOAD_ELSEWHERE = """
import sys
import numpy as np
from models.backend import backend_name
from search.results.predict import load_model

assert backend_name() == sys.argv[2], backend_name()
model = load_model(sys.argv[1])
pixels = np.load(sys.argv[3])
np.save(sys.argv[4], np.asarray(model.predict(pixels, verbose=0)))
"""


@pytest.mark.slow  # other backends, in processes of their own
@pytest.mark.backends
def test_a_saved_model_loads_and_predicts_alike_under_every_other_backend(tmp_path) -> None:
    """A `.keras` file written under this process's backend loads under each other installed
    backend (safe mode, through `predict`'s loader) and gives the same probabilities."""
    from models.backend import set_seed
    from models.builder import create_model
    from models.trial_config import TrialConfig

    keras = keras_module()
    here = keras.backend.backend()
    set_seed(0)
    model = create_model(
        TrialConfig("small_cnn", head_depth=1, head_width=8, fine_tune=1.0), 3, 32, "none"
    )
    model.save(tmp_path / "m.keras")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", pixels)
    expected = np.asarray(model.predict(pixels, verbose=0))
    others = [b for b in installed_backends() if b != here]
    assert others or here == "tensorflow", "JAX or PyTorch is installed beside TensorFlow"
    for other in others:
        out = tmp_path / f"{other}.npy"
        result = subprocess.run(
            [sys.executable, "-c", _LOAD_ELSEWHERE, str(tmp_path / "m.keras"), other]
            + [str(tmp_path / "x.npy"), str(out)],
            cwd=ROOT,
            env={**os.environ, "KERAS_BACKEND": other},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (other, result.stderr[-3000:])
        np.testing.assert_allclose(np.load(out), expected, atol=1e-4, err_msg=other)


@pytest.mark.slow  # another backend, in a process of its own
def test_seeding_under_another_backend_does_not_import_tensorflow() -> None:
    """`set_seed` seeds JAX and PyTorch runs without loading TensorFlow (seconds, and its
    start-up notices on stderr), unlike `keras.utils.set_random_seed`."""
    check = (
        "import sys\nfrom models.backend import set_seed\nset_seed(3)\n"
        "import numpy as np\nassert np.random.randint(1000) == 874\n"
        "assert 'tensorflow' not in sys.modules\nprint('ok')"
    )
    for other in [b for b in installed_backends() if b != "tensorflow"]:
        result = subprocess.run(
            [sys.executable, "-c", check],
            cwd=ROOT,
            env={**os.environ, "KERAS_BACKEND": other},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0 and "ok" in result.stdout, (other, result.stderr[-2000:])
