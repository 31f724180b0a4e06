"""The GPU path is inert on a CPU: float32 policy, no XLA, and nothing to grow."""

from __future__ import annotations

from models.backend import configure_precision, gpu_count, keras_module, use_xla


def test_auto_settings_stay_off_without_a_gpu() -> None:
    keras = keras_module()
    assert gpu_count() == 0
    try:
        assert configure_precision("auto") == "float32"
        assert keras.mixed_precision.dtype_policy().name == "float32"
        assert configure_precision("on") == "mixed_float16"
        assert keras.mixed_precision.dtype_policy().name == "mixed_float16"
        assert configure_precision("off") == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert use_xla("auto") is False and use_xla("on") is True and use_xla("off") is False
