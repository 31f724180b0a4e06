"""Custom layers and the optimizer, registered so that saved models load with Keras ``safe_mode``."""

from __future__ import annotations

from typing import Any

from models.backend import keras_module

keras = keras_module()


@keras.saving.register_keras_serializable(package="tumor_search")
class ClassProbabilities(keras.layers.Layer):
    """Identity on the softmax output that carries the class names, so that a saved model
    says what its outputs mean."""

    def __init__(self, class_names: list[str], **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.class_names = list(class_names)

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["class_names"] = list(self.class_names)
        return config


@keras.saving.register_keras_serializable(package="tumor_search")
class RateDropout(keras.layers.Layer):
    """Dropout whose rate is a (non-trainable) variable, not a Python constant.

    Keras's `Dropout` bakes its rate into the traced step (and skips itself at rate 0), so
    every trial with another rate compiles anew. With the rate a variable, trials of the
    same shapes trace the same step, which JAX's persistent cache then shares. Inverted
    dropout, identity at inference; the same expectation as Keras's.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.initial_rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        self.rate = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_rate),
            trainable=False,
            name="rate",
            dtype="float32",
        )
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        ops = keras.ops
        rate = ops.cast(self.rate, "float32")  # under mixed precision Keras autocasts it
        keep = ops.cast(1.0 - rate, inputs.dtype)
        noise = keras.random.uniform(ops.shape(inputs), dtype="float32", seed=self.seed_generator)
        kept = noise >= rate
        return ops.where(kept, inputs / keep, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(rate=self.initial_rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="tumor_search")
class DecayAdam(keras.optimizers.Adam):
    """Adam with AdamW's decoupled weight decay, whose coefficient is an optimizer variable.

    Keras's optimizers keep `weight_decay` as a Python float, a constant of the traced
    step, and Adam and AdamW are two steps: every trial with another optimizer or decay
    compiled anew. Here both are this one optimizer (``adam`` is a decay of 0, which is
    Adam exactly), so trials of the same shapes share their compiled steps.
    """

    def __init__(self, decay: float = 0.0, **kwargs: Any) -> None:
        kwargs.pop("weight_decay", None)
        super().__init__(**kwargs)
        if decay < 0:
            raise ValueError(f"weight decay must be 0 or more, got {decay}")
        self.initial_decay = float(decay)

    def build(self, variables: Any) -> None:
        if self.built:
            return
        super().build(variables)
        self.decay = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_decay),
            dtype="float32",
            name="decay",
        )
        self.weight_decay = self.decay  # what Keras's decoupled decay reads, now a variable

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(weight_decay=None, decay=self.initial_decay)
        return config
