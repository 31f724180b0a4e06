"""Writing result files safely: check the target before long work, write atomically.

A full disk while writing a result raises `common.disk.DiskFullError` (one line, exit code
74) and leaves no partial file: the temporary file beside the target is removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from common.disk import raise_when_full
from data.cache import atomic_path, atomic_write_bytes
from search.errors import InputError


def check_writable_file(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Refuse an output file that cannot be written, before any work is done.

    Raises:
        InputError: the folder is missing or read-only, or the path is a folder.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise InputError(f"{flag} {target} is a folder; give a file name")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {flag} {target}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InputError(f"cannot write {flag} {target}: permission denied")
    return target


def check_writable_dir(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be made or written (it is not created here).

    Missing parent folders are fine (they are made when the results are written): what
    counts is the nearest folder that exists.

    Raises:
        InputError: the path or one of its parents is a file, or the nearest existing
            folder is read-only.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError(f"{flag} {target} exists and is not a folder")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write {flag} {target}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise InputError(f"cannot write {flag} {target}: permission denied on {existing}")
    return target


def make_out_dir(path: Path) -> None:
    """Create the output folder (and its parents); a full disk raises `DiskFullError`."""
    with raise_when_full(path):
        path.mkdir(parents=True, exist_ok=True)


def write_result(path: Path, payload: bytes, durable: bool = True) -> None:
    """Write a result file atomically.

    Raises:
        DiskFullError: the disk, quota or file size limit is full (no partial file is left).
    """
    with raise_when_full(path):
        atomic_write_bytes(path, payload, durable=durable)


def save_model(model: Any, target: Path) -> None:
    """`model.save` to a temporary ``.keras`` beside `target`, then rename it over `target`.

    Raises:
        DiskFullError: as `write_result`.
    """
    with raise_when_full(target), atomic_path(target, suffix=target.suffix) as tmp:
        model.save(tmp)  # Keras insists on the extension


def write_document(path: Path, payload: Any) -> None:
    """Write `payload` as YAML when the name ends in .yaml/.yml, else as JSON; atomically.

    Raises:
        DiskFullError: as `write_result`.
    """
    if path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(payload, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(payload, indent=2) + "\n"
    write_result(path, text.encode())


def read_document(path: str | os.PathLike[str], flag: str = "--config") -> Any:
    """Read a JSON or YAML document written by `write_document`.

    Raises:
        InputError: missing, unreadable or malformed.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise InputError(f"{flag} {source} not found")
    try:
        text = source.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {flag} {source}: {exc}") from None
    try:
        if source.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{flag} {source} is malformed: {' '.join(str(exc).split())}") from None
