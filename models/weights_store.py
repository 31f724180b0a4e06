"""The local weights folder: one imported weights file per backbone, with its provenance.

`weights import` fills it from a notop Keras application weights file (``*.weights.h5``, or a
Keras ``*_notop.h5`` download) or from a saved model (``.keras``/``.h5``) that holds the
backbone as a nested model; `weights list` shows it. ``weights: imagenet`` resolves per
backbone: this folder first (`stored_weights`), then Keras's own cache (`imagenet_source`).

The folder is ``$TUMOR_SEARCH_WEIGHTS``, else ``weights/`` under the cache folder. It holds
``<backbone>.weights.h5`` (Keras's weights format, loadable into the registry factory's
model at any input size) and ``<backbone>.json`` (source path and sha256, weights sha256,
parameter count, date, Keras version). Both are written atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.cache import atomic_path, atomic_write_bytes, cache_root
from models.errors import WeightsError
from models.registry import Backbone, get_backbone, list_backbones
from models.weights import keras_models_dir

WEIGHTS_ENV = "TUMOR_SEARCH_WEIGHTS"
WEIGHTS_SUFFIX = ".weights.h5"
IMPORT_COMMAND = "tumor-search weights import FILE --backbone NAME"


def weights_dir() -> Path:
    """The weights folder: ``$TUMOR_SEARCH_WEIGHTS``, else ``weights/`` in the cache folder."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else cache_root() / "weights"


def stored_weights(name: str) -> Path | None:
    """The imported weights file of backbone `name`, or None when there is none."""
    path = weights_dir() / f"{name}{WEIGHTS_SUFFIX}"
    return path if path.is_file() else None


def provenance(name: str) -> dict[str, Any] | None:
    """The provenance record of backbone `name`'s imported weights (None: none, or unreadable)."""
    try:
        return json.loads((weights_dir() / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def keras_cache_files(record: Backbone) -> list[Path]:
    """The ImageNet files of `record` that Keras's own cache holds (one per input size at most)."""
    if record.imagenet_file is None:
        return []
    sizes = record.imagenet_sizes if "{size}" in record.imagenet_file else (record.default_size,)
    names = dict.fromkeys(record.imagenet_filename(size) or "" for size in sizes)
    return [keras_models_dir() / n for n in names if n and (keras_models_dir() / n).is_file()]


def imagenet_source(record: Backbone, input_size: int) -> Path | None:
    """The file ``weights: imagenet`` loads for `record` at `input_size`: the weights folder's,
    else the one in Keras's cache; None when neither holds it (Keras would download)."""
    stored = stored_weights(record.name)
    if stored is not None:
        return stored
    filename = record.imagenet_filename(input_size)
    if filename is None:
        return None
    path = keras_models_dir() / filename
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Imported:
    """What `import_weights` wrote.

    Attributes:
        backbone: The registry name.
        path: The weights file in the weights folder.
        record: Its provenance record (also written beside it as ``<backbone>.json``).
        found_in: Where in the source the weights were: ``weights file`` or the nested
            model's name.
    """

    backbone: str
    path: Path
    record: dict[str, Any]
    found_in: str


def import_weights(source: str | os.PathLike[str], name: str) -> Imported:
    """Check that `source` holds backbone `name`'s weights and store them in the weights folder.

    Args:
        source: A weights file of the notop application (``.weights.h5`` or a Keras ``.h5``
            download), or a saved model (``.keras`` or a full-model ``.h5``) that holds the
            backbone as a nested model.
        name: The registry backbone.

    Raises:
        UnknownBackboneError: `name` is not registered.
        WeightsError: `source` is missing, unreadable, or its architecture is not `name`'s
            (the message says what differs).
    """
    record = get_backbone(name)
    path = Path(source).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights source not found: {path}")
    from models.backend import keras_module

    keras = keras_module()
    reference = record.factory(record.default_size, None)
    if _is_saved_model(path):
        found_in = _load_from_model(path, reference, record)
    else:
        _load_from_weights_file(path, reference, record)
        found_in = "weights file"
    target = weights_dir() / f"{name}{WEIGHTS_SUFFIX}"
    record_path = target.with_name(f"{name}.json")
    old_record = record_path.read_bytes() if record_path.is_file() else None
    try:
        with atomic_path(target, suffix=WEIGHTS_SUFFIX) as tmp:
            reference.save_weights(str(tmp))
            info = {
                "backbone": name,
                "source": str(path.resolve()),
                "source_sha256": sha256_of(path),
                "found_in": found_in,
                "weights_sha256": sha256_of(tmp),
                "parameters": int(reference.count_params()),
                "imported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "keras": keras.__version__,
            }
            atomic_write_bytes(record_path, (json.dumps(info, indent=2) + "\n").encode())
    except BaseException:
        # The weights file is replaced last: a failure before it leaves the old pair whole.
        if old_record is not None:
            atomic_write_bytes(record_path, old_record)
        else:
            with contextlib.suppress(FileNotFoundError):
                record_path.unlink()
        raise
    return Imported(name, target, info, found_in)


def _is_saved_model(path: Path) -> bool:
    """A whole saved model (``.keras``, or an ``.h5`` with a model config), not weights alone.

    Raises:
        WeightsError: the file is neither.
    """
    if path.suffix == ".keras":
        return True
    if not path.name.endswith((".h5", ".hdf5")):
        raise WeightsError(
            f"weights source {path} must be a .weights.h5 or .h5 weights file, or a .keras or "
            ".h5 saved model"
        )
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return "model_config" in handle.attrs
    except OSError as exc:
        raise WeightsError(f"weights source {path} is not an HDF5 file: {exc}") from exc


def _load_from_weights_file(path: Path, reference: Any, record: Backbone) -> None:
    """Load a weights file into `reference`; Keras's complaint, made one line, says what differs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reference.load_weights(str(path))
        except Exception as exc:  # Keras raises ValueError, KeyError, OSError ... by format
            raise WeightsError(
                f"{path} does not hold {record.name}'s weights: {_keras_difference(str(exc))}"
            ) from exc
    # A Keras-format file missing whole groups loads the rest and only warns: refuse it.
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise WeightsError(
            f"{path} does not hold {record.name}'s weights: {_keras_difference(skipped[0])}"
        )


def _keras_difference(message: str) -> str:
    """The lines of a Keras loading error that say what differs, as one short line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "Keras could not load it"
    first = lines[0]
    if first.startswith("A total of") and len(lines) > 1:
        first = f"{first.split('. Example')[0]}; {lines[1]}"
    return first[:300]


def _load_from_model(path: Path, reference: Any, record: Backbone) -> str:
    """Copy the weights of the model nested in the saved model at `path` into `reference`.

    Returns:
        The nested model's name.
    """
    import models.layers  # noqa: F401 - registers our layers, which saved models hold
    from models.backend import keras_module

    keras = keras_module()
    try:
        saved = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError ... by content
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load saved model {path}: {first[:300]}") from exc
    expected = [tuple(w.shape) for w in reference.weights]
    candidates = _nested_models(saved, keras)
    for candidate in candidates:
        if [tuple(w.shape) for w in candidate.weights] == expected:
            reference.set_weights(candidate.get_weights())
            return candidate.name
    nested = [c for c in candidates if c is not saved] or candidates
    closest = max(nested, key=lambda c: len(c.weights))
    raise WeightsError(
        f"{path} holds no model with {record.name}'s architecture: "
        f"{_shape_difference(reference, closest, record.name)}"
    )


def _nested_models(model: Any, keras: Any) -> list[Any]:
    """`model` and every model nested in it, depth first (applications nest as a layer that is
    itself a `keras.Model`)."""
    found = [model]
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            found.extend(_nested_models(layer, keras))
    return found


def _shape_difference(reference: Any, other: Any, name: str) -> str:
    """What first differs between `reference` (the registry backbone) and `other`."""
    ours = [w for layer in reference.layers for w in layer.weights]
    theirs = [w for layer in other.layers for w in layer.weights]
    ours_layers = sum(bool(layer.weights) for layer in reference.layers)
    theirs_layers = sum(bool(layer.weights) for layer in other.layers)
    if len(ours) != len(theirs) or ours_layers != theirs_layers:
        return (
            f"{name} has {ours_layers} layers with {len(ours)} weights, the closest nested model "
            f"{other.name!r} has {theirs_layers} layers with {len(theirs)} weights"
        )
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if tuple(a.shape) != tuple(b.shape):
            return (
                f"weight {i} ({a.path}) has shape {tuple(a.shape)} in {name}, "
                f"{tuple(b.shape)} in the nested model {other.name!r} ({b.path})"
            )
    return f"the nested model {other.name!r} orders its weights differently from {name}"


def weights_listing() -> list[dict[str, Any]]:
    """Every registry backbone with its imported weights (or None) and Keras's cached files."""
    out = []
    for record in list_backbones():
        path = stored_weights(record.name)
        local = None
        if path is not None:
            local = {
                "path": str(path),
                "sha256": sha256_of(path),
                "provenance": provenance(record.name),
            }
        out.append(
            {
                "backbone": record.name,
                "weights": local,
                "keras_cache": [str(p) for p in keras_cache_files(record)],
            }
        )
    return out


def missing_weights_error(names: list[str], input_size: int) -> WeightsError:
    """The one-line error for backbones whose ImageNet weights are in neither place."""
    wheres = []
    for name in names:
        filename = get_backbone(name).imagenet_filename(input_size)
        wheres.append(f"{name} ({filename})" if filename else f"{name} (no ImageNet weights)")
    return WeightsError(
        f"no local weights for backbone(s) {', '.join(names)}: neither {weights_dir()} nor "
        f"Keras's cache {keras_models_dir()} holds them ({'; '.join(wheres)}); import each with "
        f"`{IMPORT_COMMAND}`, or pass --download-weights to let Keras download them"
    )
