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
from typing import Any


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the block: the lines C++ libraries print as they start
    (TensorFlow's, LiteRT's XNNPACK delegate), which Python's own stderr cannot catch."""
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
    # JAX otherwise takes 75 % of a GPU's memory when it starts, leaving a second worker
    # on the same GPU (or PyTorch, or TensorFlow) nothing; it now grows as needed.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with quiet_stderr():
        import keras

        if keras.backend.backend() == "jax":
            _jax_compilation_cache()
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


def _jax_compilation_cache() -> None:
    """Keep JAX's compiled steps on disk, under the cache folder, so that the next trial
    or process with the same model and shapes skips XLA's compilation (seconds per step
    on a CPU). A cache folder the user set (JAX_COMPILATION_CACHE_DIR) wins."""
    import jax

    from data.cache import cache_root

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    # Only what took a while to compile: tiny eager ops would cost more to look up. A head's
    # train step compiles in 0.2-0.5 s on a CPU: at 0.5 s none was kept and every trial
    # compiled anew; at 0.1 s the steps are kept (3 files, not the 14 of every op at 0).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    from jax._src import monitoring  # JAX's own event counters (no public accessor)

    monitoring.register_event_listener(_count_jax_event)


_JAX_CACHE_HITS = [0]


def _count_jax_event(name: str, **kwargs: Any) -> None:
    if name == "/jax/compilation_cache/cache_hits":
        _JAX_CACHE_HITS[0] += 1


def jax_cache_hits() -> int:
    """Compiled steps this process has loaded from JAX's persistent cache so far."""
    return _JAX_CACHE_HITS[0]


def installed_backends() -> list[str]:
    """The Keras backends whose library is installed here, without importing any of them."""
    import importlib.util

    return [name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name)]


def backend_name() -> str:
    """The Keras backend in use: ``tensorflow``, ``jax`` or ``torch``."""
    return str(keras_module().backend.backend())


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, Keras and the backend, as `keras.utils.set_random_seed` does,
    without importing TensorFlow under another backend (that utility imports it whenever it
    is installed, which costs seconds and prints TensorFlow's start-up notices)."""
    keras = keras_module()
    if backend_name() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if backend_name() == "torch":
        import torch

        torch.manual_seed(seed)


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
    """Whether to compile the train, test and predict steps (XLA on TensorFlow and JAX,
    torch.compile on PyTorch).

    ``auto`` means: always on JAX, whose steps run op by op without it (mobilenet_v3_small
    at 64 px on 2 CPU cores: 5.0 s an epoch without, 1.7 s with); on TensorFlow only on a
    GPU (on a CPU its compile time outweighs short trials); never on PyTorch, whose
    torch.compile takes longer than a trial saves.
    """
    if xla != "auto":
        return xla == "on"
    backend = backend_name()
    return backend == "jax" or (backend == "tensorflow" and gpu_count() > 0)


def device_text() -> str:
    """Where this process trains: ``CPU`` or ``N GPUs``, with CUDA_VISIBLE_DEVICES if set."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = gpu_count()
    where = f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "CPU"
    return where + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")


def runtime_text() -> str:
    """The backend and device of this process, as workers and `backbones` print it:
    ``jax on 1 GPU``."""
    return f"{backend_name()} on {device_text()}"


def runtime_info() -> dict[str, str]:
    """The Keras version, backend and device, for JSON output and trial attributes."""
    keras = keras_module()
    return {"keras": keras.__version__, "backend": backend_name(), "device": device_text()}


def call_inference(layer: Any, x: Any) -> Any:
    """`layer(x)` in inference mode (a layer whose call takes no `training` gets none)."""
    try:
        return layer(x, training=False)
    except TypeError:
        return layer(x)


def trace_predict_any_batch(model: Any, sample_shape: tuple[int, ...], dtype: Any) -> None:
    """On TensorFlow, trace `model.predict_on_batch`'s step once for batches of any size of
    inputs of `sample_shape` and `dtype` (before its first call; elsewhere nothing).

    The step is a `tf.function` that traces for the first batch's exact shape, then once
    more, relaxed, for the next shape it meets: a trial's padded validation batches, then
    its footprint's single image, traced it twice (0.4 s each for a MobileNetV3Small at
    64 px on 2 cores). Traced for a batch of unknown size, it serves both.
    """
    if backend_name() != "tensorflow" or getattr(model, "predict_function", True) is not None:
        return
    import tensorflow as tf

    model.make_predict_function()
    step = model.predict_function
    if hasattr(step, "get_concrete_function"):  # not when the model runs eagerly
        step.get_concrete_function([(tf.TensorSpec([None, *sample_shape], dtype),)])


# The prefix of the names under which tf.custom_gradient registers its gradient functions.
_CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


def release_models(free_dropped: bool = True) -> None:
    """Free what the models of this process left behind: Keras's session (its names and
    graphs) and, on TensorFlow, the train steps' graphs that a global registry still holds.

    Keras's TensorFlow optimizer sums each step's gradients through the replica context's
    ``all_reduce``, which wraps them in ``tf.custom_gradient``: in a traced train step that
    registers a gradient function, ``CustomGradient-<uid>``, in TensorFlow's global gradient
    registry, and the function keeps the whole traced graph alive. A process that trains one
    model after another grew by 60-500 MB a model (mobilenet_v3_small at 64 px: about 230 MB)
    until these entries were dropped; then it stays flat (tests/models/test_backend_memory.py).
    A registered function serves only while its step is traced (the tape differentiates
    there), so the entries of finished models are dead weight. Then glibc is asked to hand
    the freed heap back to the system, so that resident memory shows it. Models kept for
    their traced steps (`models.step_reuse`) stay, out of the garbage collector's sight;
    those it dropped are freed now, or with `free_dropped` False at a later call.
    """
    if backend_name() == "tensorflow":
        try:
            from tensorflow.python.framework import ops  # private: no public way to unregister

            registry = ops._gradient_registry._registry
        except (ImportError, AttributeError):
            registry = {}
        for name in [n for n in registry if str(n).startswith(_CUSTOM_GRADIENT_PREFIX)]:
            registry.pop(name, None)
    from models.step_reuse import POOL

    clear_session = keras_module().backend.clear_session
    try:
        clear_session(free_memory=False)  # one collection, below, not two
    except TypeError:  # a Keras without the argument
        clear_session()
    POOL.collect(free_dropped)
    _trim_heap()


def _trim_heap() -> None:
    """Return the freed heap to the system (glibc's malloc_trim); nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return
