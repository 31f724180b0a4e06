"""The GPU path: inert on a CPU (float32 policy, no XLA), on whatever machine runs the tests."""

from __future__ import annotations

import os
import subprocess
import sys

from models.backend import configure_precision, gpu_count, keras_module, use_xla
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
assert use_xla("auto") is False and use_xla("on") is True and use_xla("off") is False
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
    assert use_xla("auto") is (gpus > 0)
