"""`tumor-search cache info` and `tumor-search cache clear [--older-than DAYS]`.

An entry is one decoded split (``images/.../<split>.npz``) or one backbone's features
(``features/<key>/``), with its lock and any temporary files a crashed writer left, or one
step that JAX compiled (``jax/<name>-cache``, no lock). Its age
counts from when it was last written or used. `clear` takes each entry's lock without
waiting and keeps the entries another process holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from data.cache import (
    FEATURES,
    FEATURES_FILE,
    IMAGES,
    cache_root,
    lock_path,
    try_entry_lock,
)

COMPILED = "jax"  # JAX's compiled steps (models.backend): one file an entry, no lock
KINDS = (IMAGES, FEATURES, COMPILED)
DAY = 86400.0


@dataclass(frozen=True)
class CacheEntry:
    """One cache entry as found on disk.

    Attributes:
        kind: ``images`` or ``features``.
        path: The entry: a file (images) or a folder (features).
        data: The data file whose lock guards the entry.
        files: Every file of the entry: data, lock and leftover temporary files.
        size: Bytes of those files.
        mtime: When the entry was last written or used (its newest file).
        complete: Whether the data file exists (no: being computed, or abandoned).
    """

    kind: str
    path: Path
    data: Path
    files: tuple[Path, ...]
    size: int
    mtime: float
    complete: bool


def _entry(kind: str, path: Path, data: Path, files: list[Path]) -> CacheEntry:
    stats = []
    for file in files:
        with contextlib.suppress(FileNotFoundError):  # its writer replaced or removed it
            stats.append((file, file.stat()))
    # A lock file is made (so touched) by whoever merely checks the entry, `clear` included.
    mtimes = [s.st_mtime for f, s in stats if not f.name.endswith(".lock")]
    mtimes = mtimes or [s.st_mtime for _, s in stats]
    if not mtimes:
        with contextlib.suppress(FileNotFoundError):
            mtimes.append(path.stat().st_mtime)
    size = sum(s.st_size for _, s in stats)
    return CacheEntry(kind, path, data, tuple(files), size, max(mtimes, default=0.0), data.exists())


def _data_name(file_name: str) -> str:
    """``x.npz`` for ``x.npz``, its lock ``x.npz.lock`` and a temporary ``.x.npz.abc.tmp``."""
    if file_name.endswith(".lock"):
        return file_name[: -len(".lock")]
    if file_name.startswith(".") and file_name.endswith(".tmp"):
        return file_name[1:-4].rsplit(".", 1)[0]
    return file_name


def _files(folder: Path) -> list[Path]:
    """Every file under `folder` (os.walk: folders removed meanwhile are skipped, not errors)."""
    return sorted(Path(top) / name for top, _, names in os.walk(folder) for name in names)


def list_entries(root: Path) -> list[CacheEntry]:
    """Every entry under the cache folder `root`, oldest first."""
    groups: dict[Path, list[Path]] = {}
    for file in _files(root / IMAGES):
        groups.setdefault(file.with_name(_data_name(file.name)), []).append(file)
    entries = [_entry(IMAGES, data, data, files) for data, files in groups.items()]
    features = root / FEATURES
    for folder in sorted(features.iterdir()) if features.is_dir() else []:
        if folder.is_dir():
            entries.append(_entry(FEATURES, folder, folder / FEATURES_FILE, _files(folder)))
    entries += [_entry(COMPILED, f, f, [f]) for f in _files(root / COMPILED)]
    return sorted(entries, key=lambda e: e.mtime)


def remove_entry(entry: CacheEntry, root: Path, cutoff: float | None = None) -> tuple[str, int]:
    """Delete `entry` unless another process holds its lock or it was used after `cutoff`.

    Returns:
        ``("removed", bytes freed)``, ``("busy", 0)`` or ``("used", 0)`` (used since listed).
    """
    if entry.kind == COMPILED:  # JAX writes each file whole and recompiles a missing one
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        return "removed", entry.size
    with try_entry_lock(entry.data) as held:
        if not held:
            return "busy", 0
        files = _files(entry.path) if entry.kind == FEATURES else list(entry.files)
        current = _entry(entry.kind, entry.path, entry.data, files)
        if cutoff is not None and current.mtime >= cutoff:
            return "used", 0
        if entry.kind == FEATURES:
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            for file in (*entry.files, lock_path(entry.data)):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
    parent = entry.path.parent
    while parent != root / entry.kind and root in parent.parents:
        try:
            parent.rmdir()  # only while empty: a neighbour's lock file keeps it
        except OSError:
            break
        parent = parent.parent
    return "removed", current.size


def human_size(size: float) -> str:
    """``1.5 MiB`` for 1572864."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """``3.2 days``, ``5.0 h`` or ``12 min``."""
    if seconds >= DAY:
        return f"{seconds / DAY:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(seconds, 0) / 60:.0f} min"


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return value


def info_summary(root: Path, now: float | None = None) -> dict:
    """The `cache info --json` object."""
    now = time.time() if now is None else now
    listed = list_entries(root)
    complete = [e for e in listed if e.complete]
    total = _entry("all", root, root, _files(root)).size
    oldest = complete[0] if complete else None
    return {
        "path": str(root),
        "bytes": total,
        "size": human_size(total),
        "entries": {kind: sum(e.kind == kind for e in complete) for kind in KINDS},
        "bytes_per_kind": {kind: sum(e.size for e in listed if e.kind == kind) for kind in KINDS},
        "incomplete": len(listed) - len(complete),
        "oldest": str(oldest.path.relative_to(root)) if oldest else None,
        "oldest_age_s": round(now - oldest.mtime, 1) if oldest else None,
    }


def cmd_info(args: argparse.Namespace) -> int:
    summary = info_summary(cache_root())
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    entries, sizes = summary["entries"], summary["bytes_per_kind"]
    print(f"cache:    {summary['path']}")
    print(f"size:     {summary['size']} in {sum(entries.values())} entries")
    for kind in KINDS:
        print(f"{kind + ':':<9} {entries[kind]} entries, {human_size(sizes[kind])}")
    if summary["incomplete"]:
        print(f"pending:  {summary['incomplete']} entries being computed or abandoned")
    if summary["oldest"] is None:
        print("oldest:   none")
    else:
        print(f"oldest:   {human_age(summary['oldest_age_s'])} ({summary['oldest']})")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    root = cache_root()
    cutoff = None if args.older_than is None else time.time() - args.older_than * DAY
    removed: list[dict] = []
    busy: list[str] = []
    for entry in list_entries(root):
        if cutoff is not None and entry.mtime >= cutoff:
            continue
        status, freed = remove_entry(entry, root, cutoff)
        name = str(entry.path.relative_to(root))
        if status == "busy":
            busy.append(name)
        elif status == "removed":
            removed.append({"entry": name, "bytes": freed})
            if not args.json:
                print(f"removed {name} ({human_size(freed)})")
    freed_total = sum(r["bytes"] for r in removed)
    if args.json:
        json.dump({"removed": removed, "kept_busy": busy, "bytes_freed": freed_total}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    for name in busy:
        print(f"kept {name} (in use by another process)")
    print(f"removed {len(removed)} entries, freed {human_size(freed_total)}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cache = sub.add_parser(
        "cache",
        help="show or clear the decoded-image, feature and compiled-step caches",
        description=(
            "Show or clear the on-disk caches (decoded images, backbone features, JAX's "
            "compiled steps) under "
            "$TUMOR_SEARCH_CACHE, else ~/.cache/tumor-search."
        ),
    )
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="{info,clear}", required=True)
    info = cache_sub.add_parser(
        "info",
        parents=[common],
        help="cache folder, size, entries per kind, oldest entry",
        description="Print the cache folder, its size, entries per kind and the oldest entry.",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=cmd_info)
    clear = cache_sub.add_parser(
        "clear",
        parents=[common],
        help="remove cache entries (all, or those unused for DAYS)",
        description=(
            "Remove cache entries with their lock files; entries that another process is "
            "computing or holds stay. They are rebuilt when next needed."
        ),
    )
    clear.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="only entries last written or used more than DAYS days ago",
    )
    clear.add_argument("--json", action="store_true", help="print one JSON object")
    clear.set_defaults(handler=cmd_clear)
