"""Per-trial and per-study files in Optuna's artifact store, which optuna-dashboard shows.

Each trial uploads its learning curves (JSON and PNG) and, when it completes, its
validation confusion matrix (PNG), from inside the objective (Optuna refuses uploads to a
finished trial). `finalize` and `train-best` attach their figures to the study. The store is
a `FileSystemArtifactStore` whose folder is recorded on the study (`ARTIFACTS_ATTR`), so
`dashboard`, `report` and every worker find it: by default a folder beside an SQLite file
(``studies-artifacts/`` for ``studies.db``), else ``artifacts/`` under the cache folder;
``--artifacts DIR`` chooses another. Workers on several machines need it on a shared path.

An upload never fails a trial: a full disk or an unreachable folder is one logged line.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common.progress import log
from data.cache import cache_root
from search.errors import one_line

ARTIFACTS_ATTR = "artifacts_dir"


def default_dir(storage_url: str) -> Path:
    """Where a study on `storage_url` keeps its artifacts unless told otherwise."""
    from search.runtime.storage import parse_url

    parsed = parse_url(storage_url)
    if parsed.sqlite_path is not None:
        db = Path(parsed.sqlite_path).resolve()
        return db.with_name(f"{db.stem}-artifacts")
    return (cache_root() / "artifacts").expanduser().resolve()


def recorded_dir(study: Any) -> Path | None:
    """The folder a study recorded, or None (a study made before artifacts existed)."""
    value = study.user_attrs.get(ARTIFACTS_ATTR)
    return Path(value) if isinstance(value, str) and value else None


def store_of(study: Any) -> Any | None:
    """The artifact store the study recorded (None: it recorded none, or it is unusable)."""
    if study is None:
        return None
    try:
        folder = recorded_dir(study)
    except Exception as exc:  # noqa: BLE001 - reading the attribute is a storage call
        log(f"artifacts: the study's folder cannot be read ({one_line(str(exc))})")
        return None
    return open_store(folder) if folder is not None else None


@functools.cache
def _store(folder: str) -> Any:
    from optuna.artifacts import FileSystemArtifactStore

    Path(folder).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


_UNUSABLE: set[str] = set()


def open_store(folder: Path) -> Any | None:
    """A store on `folder` (made when missing); None, with one logged line per folder and
    process, if it cannot be."""
    try:
        return _store(str(folder))
    except OSError as exc:
        if str(folder) not in _UNUSABLE:
            _UNUSABLE.add(str(folder))
            log(f"artifacts: cannot use {folder} ({one_line(str(exc))}); going on without them")
        return None


def reader_store(folder: Path) -> Any:
    """A store that only reads `folder`, which may not exist yet: a dashboard on a read-only
    mount starts before the first trial makes it, and serves what trials upload later."""
    from optuna.artifacts import FileSystemArtifactStore

    if not folder.is_dir():
        log(f"artifacts: {folder} does not exist yet; trials make it when they upload")
    return FileSystemArtifactStore(str(folder))


def upload(store: Any, owner: Any, name: str, payload: bytes, mimetype: str) -> bool:
    """Upload `payload` as the artifact `name` of `owner` (a trial or a study). Never raises:
    a failure is one logged line and False."""
    if store is None:
        return False
    import optuna

    try:
        with tempfile.TemporaryDirectory(prefix="tumor-artifact-") as tmp:
            path = os.path.join(tmp, name)
            Path(path).write_bytes(payload)
            optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=path, study_or_trial=owner, mimetype=mimetype
            )
    except Exception as exc:  # noqa: BLE001 - an artifact is never worth a failed trial
        log(f"artifacts: {name} not uploaded ({one_line(f'{type(exc).__name__}: {exc}')})")
        return False
    return True


# Pillow draws the figures (matplotlib would be one more dependency for every GPU worker).
_WHITE, _INK, _GRID = (255, 255, 255), (40, 40, 40), (225, 225, 225)
_COLOURS = {"": (31, 119, 180), "val_": (255, 127, 14)}


def _png(image: Any) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _panel(
    draw: Any, box: tuple[int, int, int, int], series: dict[str, list[float]], title: str
) -> None:
    """One line chart in `box` (left, top, right, bottom): each series against its epoch."""
    left, top, right, bottom = box
    draw.text((left, top - 18), title, fill=_INK)
    draw.rectangle(box, outline=_INK)
    values = [v for vs in series.values() for v in vs if v == v and abs(v) != float("inf")]
    if not values:
        return
    low, high = min(values), max(values)
    high = high if high > low else low + 1.0
    epochs = max(len(vs) for vs in series.values())
    for fraction in (0.25, 0.5, 0.75):
        y = bottom - fraction * (bottom - top)
        draw.line((left + 1, y, right - 1, y), fill=_GRID)
    draw.text((left - 46, top - 4), f"{high:.3g}", fill=_INK)
    draw.text((left - 46, bottom - 8), f"{low:.3g}", fill=_INK)
    draw.text((right - 40, bottom + 4), f"epoch {epochs}", fill=_INK)
    for row, (name, vs) in enumerate(series.items()):
        colour = _COLOURS["val_" if name.startswith("val_") else ""]
        points = [
            (
                left + (right - left) * (i / max(1, epochs - 1)),
                bottom - (bottom - top) * ((v - low) / (high - low)),
            )
            for i, v in enumerate(vs)
            if v == v and abs(v) != float("inf")
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            x, y = points[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        draw.text((left + 6, top + 4 + 14 * row), name, fill=colour)


def curves_png(history: dict[str, list[float]], title: str) -> bytes:
    """Loss and accuracy per epoch, training and validation, as a PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (820, 330), _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill=_INK)
    for index, kind in enumerate(("loss", "accuracy")):
        series = {k: list(history.get(k) or []) for k in (kind, f"val_{kind}") if history.get(k)}
        left = 60 + index * 400
        _panel(draw, (left, 50, left + 330, 300), series, kind)
    return _png(image)


def confusion_png(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    """A confusion matrix (rows: true class, columns: predicted) with its counts, as a PNG."""
    from PIL import Image, ImageDraw

    n, cell, left, top = len(classes), 70, 110, 50
    image = Image.new("RGB", (left + n * cell + 20, top + n * cell + 60), _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill=_INK)
    draw.text((left, top - 18), "predicted ->", fill=_INK)
    peak = max((max(row) for row in matrix if row), default=0) or 1
    for i, row in enumerate(matrix):
        draw.text((6, top + i * cell + cell // 2 - 6), classes[i][:16], fill=_INK)
        for j, count in enumerate(row):
            shade = int(255 - 200 * count / peak)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell, top + (i + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255), outline=_INK)
            ink = _WHITE if count > peak / 2 else _INK
            draw.text((box[0] + cell // 2 - 8, box[1] + cell // 2 - 6), str(count), fill=ink)
    for j, name in enumerate(classes):
        draw.text((left + j * cell + 4, top + n * cell + 6), name[:10], fill=_INK)
    draw.text((6, top + n * cell + 30), "rows: true class", fill=_INK)
    return _png(image)


def upload_trial_figures(
    store: Any,
    trial: Any,
    history: dict[str, list[float]],
    confusion: tuple[list[list[int]], list[str]] | None = None,
) -> None:
    """A trial's learning curves (JSON, PNG) and, when given, its validation confusion matrix."""
    if store is None:
        return
    number = trial.number
    upload(store, trial, "learning_curves.json", json.dumps(history).encode(), "application/json")
    try:
        png = curves_png(history, f"trial {number}")
    except Exception as exc:  # noqa: BLE001 - a figure is never worth a failed trial
        log(f"artifacts: no learning-curve figure ({one_line(str(exc))})")
    else:
        upload(store, trial, "learning_curves.png", png, "image/png")
    if confusion is not None:
        try:
            png = confusion_png(confusion[0], confusion[1], f"trial {number}: validation")
        except Exception as exc:  # noqa: BLE001
            log(f"artifacts: no confusion-matrix figure ({one_line(str(exc))})")
        else:
            upload(store, trial, "confusion_val.png", png, "image/png")
