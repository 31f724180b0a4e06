"""The weights policy: ``imagenet`` | ``none`` | a path to a weights file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import WeightsError
from models.registry import Backbone


@dataclass(frozen=True)
class WeightsPolicy:
    """Where a backbone's weights come from.

    Attributes:
        kind: ``imagenet``, ``none`` or ``file``.
        path: The weights file (``file`` only).
    """

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return str(self.path) if self.kind == "file" else self.kind

    def identity(self) -> str:
        """What identifies these weights in cache keys: a file is known by its content."""
        if self.kind != "file":
            return self.kind
        assert self.path is not None
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return "sha256:" + digest.hexdigest()

    def load_into(self, backbone: Any) -> None:
        """Load the weights file into `backbone` (which must match its architecture)."""
        assert self.path is not None
        try:
            backbone.load_weights(str(self.path))
        except Exception as exc:  # Keras raises ValueError, OSError, KeyError ... by format
            raise WeightsError(
                f"cannot load weights file {self.path} into {backbone.name}: {exc}"
            ) from exc


def parse_weights(value: str | os.PathLike[str] | WeightsPolicy) -> WeightsPolicy:
    """Turn a config value into a `WeightsPolicy`.

    Raises:
        WeightsError: a path that does not exist or is not a Keras weights file.
    """
    if isinstance(value, WeightsPolicy):
        return value
    text = str(value).strip()
    if text.lower() == "imagenet":
        return WeightsPolicy("imagenet")
    if text.lower() in ("none", "null", "scratch", ""):
        return WeightsPolicy("none")
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path} (weights must be 'imagenet', 'none' or a path to a "
            ".weights.h5 or .h5 file)"
        )
    if not (path.name.endswith(".weights.h5") or path.suffix in (".h5", ".hdf5", ".keras")):
        raise WeightsError(f"weights file {path} must end in .weights.h5 or .h5")
    return WeightsPolicy("file", path.resolve())


def keras_models_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imagenet_unavailable_error(record: Backbone, input_size: int, reason: str) -> WeightsError:
    """The one-line error for ImageNet weights that cannot be had (offline, say)."""
    filename = record.imagenet_filename(input_size)
    if filename is None:
        where = f"{record.name} has no ImageNet weights"
    else:
        where = (
            f"ImageNet weights for {record.name} are not available: Keras looks for "
            f"{keras_models_dir() / filename} and could not download it"
        )
    first_line = reason.strip().splitlines()[0] if reason.strip() else ""
    if "URL fetch failure" in first_line and " -- " in first_line:
        first_line = "download failed: " + first_line.split(" -- ", 1)[1]
    detail = f" ({first_line[:200]})" if first_line and filename is not None else ""
    return WeightsError(
        f"{where}{detail}; copy that file there, or use weights 'none' (train from scratch) "
        "or weights '/path/to/backbone.weights.h5'"
    )
