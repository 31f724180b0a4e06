"""Custom layers, registered so that saved models load with Keras ``safe_mode``."""

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
