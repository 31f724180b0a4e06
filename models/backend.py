"""Importing Keras quietly, and what the accelerator offers.

TensorFlow's C++ runtime writes start-up notices straight to file descriptor 2 while it
loads; they would turn a one-line error message into a page. `keras_module()` silences
that descriptor during the import only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def keras_module() -> ModuleType:
    """Import and return `keras` (any Keras 3 backend), without start-up noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_fd2():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                # Grow GPU memory as needed rather than taking it all at start.
                with contextlib.suppress(RuntimeError, ValueError):
                    tf.config.experimental.set_memory_growth(gpu, True)
            if not gpus:
                # On a CPU, trials are short and Grappler's graph rewrites at every trace
                # cost more than they save: the test suite's short trials take 8.8 min
                # with it off, 11.2 min with it on. Long trials pay for it (small_cnn's
                # later epochs at 64 px run about 10% slower without it).
                tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return keras


@functools.cache
def gpu_count() -> int:
    """GPUs visible to the Keras backend (0 on a CPU-only machine)."""
    keras = keras_module()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return 0


def configure_precision(mixed_precision: str) -> str:
    """Set the global dtype policy.

    Args:
        mixed_precision: ``auto`` (mixed_float16 on a GPU, float32 elsewhere), ``on`` or ``off``.

    Returns:
        The policy name now in force.
    """
    keras = keras_module()
    use_mixed = mixed_precision == "on" or (mixed_precision == "auto" and gpu_count() > 0)
    policy = "mixed_float16" if use_mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def use_xla(xla: str) -> bool:
    """Whether to compile models with XLA: ``auto`` means only on a GPU."""
    return xla == "on" or (xla == "auto" and gpu_count() > 0)


def device_text() -> str:
    """Where this process trains: ``CPU`` or ``N GPUs``, with CUDA_VISIBLE_DEVICES if set."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = gpu_count()
    where = f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "CPU"
    return where + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")
