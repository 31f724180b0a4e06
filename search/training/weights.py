"""Weights checked before the first trial: every trial would fail without them."""

from __future__ import annotations

from common.progress import log
from search.config import StudyConfig


def ensure_weights(config: StudyConfig) -> None:
    """Fail before the first trial if the weights cannot be had (offline ImageNet, a missing
    file), instead of failing every trial."""
    policy = config.weights_policy()
    if policy.kind != "imagenet":
        return
    from models.registry import get_backbone
    from models.weights import keras_models_dir

    missing = [
        name
        for name in config.space.backbones
        if not (
            keras_models_dir()
            / (get_backbone(name).imagenet_filename(config.data.image_size) or "")
        ).is_file()
    ]
    if not missing:
        return
    from models.backend import keras_module
    from models.builder import build_backbone

    keras = keras_module()
    for name in missing:
        build_backbone(get_backbone(name), config.data.image_size, policy)  # downloads them
        keras.backend.clear_session()
        log(f"fetched ImageNet weights for {name}")
