"""Weights checked before the first trial: every trial would fail without them.

``weights: imagenet`` resolves per backbone: the weights folder (`weights import`) first,
then Keras's own cache. Nothing is downloaded unless asked (`--download-weights`): Keras's
download has no timeout and hangs on an offline node.
"""

from __future__ import annotations

from common.progress import log
from search.config import StudyConfig
from search.errors import InputError


def ensure_weights(config: StudyConfig, download: bool = False) -> None:
    """Fail before the first trial (and before a study is made) if the weights cannot be had.

    Args:
        config: The study config; only ``weights: imagenet`` is checked here (a weights
            file is checked when the config's policy is parsed).
        download: Let Keras download the ImageNet weights that neither the weights folder
            nor Keras's cache holds.

    Raises:
        WeightsError: a backbone's weights are in neither place (and `download` is False), or
            the download failed; the message names every such backbone.
    """
    policy = config.weights_policy()
    if policy.kind != "imagenet":
        return
    from models.registry import get_backbone
    from models.weights_store import imagenet_source, missing_weights_error

    size = config.data.image_size
    missing = [
        name for name in config.space.backbones if imagenet_source(get_backbone(name), size) is None
    ]
    if not missing:
        return
    if not download:
        raise missing_weights_error(missing, size)
    from models.backend import keras_module
    from models.builder import build_backbone

    keras = keras_module()
    for name in missing:
        build_backbone(get_backbone(name), size, policy)  # downloads them
        keras.backend.clear_session()
        log(f"fetched ImageNet weights for {name}")


def weights_identities(config: StudyConfig) -> dict[str, str | None]:
    """Each backbone's weights as the study records them: ``sha256:<hex>`` of the file that
    is loaded (``none``: random weights; None: no file here, Keras would download it)."""
    from models.registry import get_backbone
    from models.weights_store import imagenet_source, sha256_of

    policy = config.weights_policy()
    out: dict[str, str | None] = {}
    for name in config.space.backbones:
        if policy.kind == "none":
            out[name] = "none"
            continue
        path = (
            policy.path
            if policy.kind == "file"
            else imagenet_source(get_backbone(name), config.data.image_size)
        )
        out[name] = f"sha256:{sha256_of(path)}" if path is not None else None
    return out


def check_same_weights(
    config: StudyConfig, recorded: dict[str, str | None] | None, study_name: str
) -> None:
    """Refuse weights here that differ from those the study was created with.

    Args:
        config: The study's config.
        recorded: The study's record (`weights_identities` at creation; None: an older study
            that recorded none, which is not checked).
        study_name: The study, for the message.

    Raises:
        InputError: a backbone's weights file here has other bytes than the study's.
    """
    if not recorded:
        return
    here = weights_identities(config)
    for name, theirs in recorded.items():
        ours = here.get(name)
        if theirs is not None and ours is not None and ours != theirs:
            raise InputError(
                f"the weights of backbone {name} here ({ours[:19]}) differ from those study "
                f"{study_name!r} was created with ({theirs[:19]}); import the same file with "
                f"`tumor-search weights import FILE --backbone {name}`"
            )
