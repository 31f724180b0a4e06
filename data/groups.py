"""Patient groups: images that must stay in one split and one cross-validation fold.

Many slices come from one patient, and a split that puts slices of one patient on both sides
inflates test accuracy (Yagis et al., Scientific Reports 2021); near-duplicate grouping
catches only the closest slices. A study names each image's group with

* ``data.groups: FILE.csv``: columns ``path`` (relative to the dataset folder, ``/``
  separators) and ``group``; a relative FILE is read from the dataset folder; or
* ``data.group_pattern: REGEX``: the first capture group of the regex, searched in each
  image's relative path (``Training/glioma/(P\\d+)_`` or ``/(sub-\\w+)/``).

Every readable image needs a group and every CSV row an image (a row may name a file that
turned out unreadable); anything else is a `DataError` with the counts and the first few
paths. Without either, DICOM slices are grouped by PatientID (else StudyInstanceUID, else
file) and NIfTI slices by volume, and other images stand alone (`group_warnings` says when
PatientIDs look unusable). The split (`data.split`) joins a patient's images, and joins two patients whose
images are copies of each other.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from data.discovery import Dataset
from data.errors import DataError

SHOWN = 3  # paths named in an error


def _some(paths: Sequence[str]) -> str:
    more = f", ... ({len(paths) - SHOWN} more)" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regex of ``group_pattern``, which must compile and capture.

    Raises:
        DataError: it does not compile or has no capture group.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"group_pattern {pattern!r} is not a regex: {exc}") from None
    if compiled.groups < 1:
        raise DataError(
            f"group_pattern {pattern!r} has no capture group: put the patient's part of the "
            r"path in parentheses, e.g. '/(P\d+)_'"
        )
    return compiled


def read_groups_csv(path: Path) -> dict[str, str]:
    """``path -> group`` from a CSV with ``path`` and ``group`` columns.

    Raises:
        DataError: the file is missing or unreadable, lacks a column, has an empty group or
            names a path twice with two groups.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {name.strip().lower(): name for name in reader.fieldnames or []}
            missing = [c for c in ("path", "group") if c not in columns]
            if missing:
                raise DataError(
                    f"groups file {path} has no {missing[0]!r} column (it needs 'path' and "
                    f"'group'; found {', '.join(columns) or 'no header'})"
                )
            rows = [(row[columns["path"]], row[columns["group"]], n) for n, row in
                    enumerate(reader, start=2)]  # fmt: skip
    except FileNotFoundError:
        raise DataError(f"groups file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read groups file {path}: {exc}") from None
    out: dict[str, str] = {}
    for raw_path, raw_group, line in rows:
        rel = (raw_path or "").strip().replace("\\", "/")
        rel = rel[2:] if rel.startswith("./") else rel
        group = (raw_group or "").strip()
        if not rel or not group:
            raise DataError(f"groups file {path}, line {line}: an empty path or group")
        if out.setdefault(rel, group) != group:
            raise DataError(
                f"groups file {path}, line {line}: {rel} is in group {out[rel]!r} and {group!r}"
            )
    return out


def pattern_groups(paths: Iterable[str], pattern: str) -> dict[str, str]:
    """``path -> group`` from the first capture group of `pattern` in each path (paths it
    does not match are left out)."""
    compiled = compile_pattern(pattern)
    out = {}
    for path in paths:
        found = compiled.search(path)
        if found is not None and found.group(1):
            out[path] = found.group(1)
    return out


def dataset_groups(
    dataset: Dataset, groups_file: str | None = None, group_pattern: str | None = None
) -> dict[str, str]:
    """Each readable image's group under `groups_file` or `group_pattern` (neither: {}).

    Raises:
        DataError: both are given; the file or pattern is unusable; an image has no group,
            or a CSV row names no file of the dataset.
    """
    if groups_file is not None and group_pattern is not None:
        raise DataError("give data.groups or data.group_pattern, not both")
    paths = [record.path for record in dataset.images]
    if groups_file is not None:
        file = Path(groups_file).expanduser()
        file = file if file.is_absolute() else dataset.root / file
        mapping = read_groups_csv(file)
        known = set(paths) | set(dataset.unreadable)
        orphans = sorted(p for p in mapping if p not in known)
        if orphans:
            raise DataError(
                f"groups file {file}: {len(orphans)} row(s) name no image of {dataset.root}: "
                f"{_some(orphans)}"
            )
        where = f"groups file {file}"
    elif group_pattern is not None:
        mapping = pattern_groups(paths, group_pattern)
        where = f"group_pattern {group_pattern!r}"
    elif any(record.group for record in dataset.images):  # DICOM patients, NIfTI volumes
        return {r.path: r.group or f"image:{r.path}" for r in dataset.images}
    else:
        return {}
    missing = [p for p in paths if p not in mapping]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(paths)} images have no group in {where}: {_some(missing)}"
        )
    return {p: mapping[p] for p in paths}


def group_warnings(dataset: Dataset) -> list[str]:
    """Lines about DICOM patient groups that will not protect the split: most files without
    a PatientID, or one PatientID for every file (anonymisation often blanks or fixes it)."""
    files: dict[str, str] = {}
    for record in dataset.images:
        file = record.path.partition("#")[0]
        if file.lower().endswith((".dcm", ".dicom")):
            files[file] = record.group
    if len(files) < 2:
        return []
    blank = sum(not group.startswith("patient:") for group in files.values())
    patients = {group for group in files.values() if group.startswith("patient:")}
    if blank * 2 > len(files):
        return [
            f"warning: {blank} of {len(files)} DICOM files have no PatientID, so they are "
            "grouped by study or by file: give data.groups or data.group_pattern for patients"
        ]
    if len(patients) == 1 and not blank:
        only = next(iter(patients)).removeprefix("patient:")
        return [
            f"warning: all {len(files)} DICOM files have PatientID {only!r}: one patient puts "
            "every slice in one split; give data.groups or data.group_pattern if anonymisation "
            "replaced the IDs"
        ]
    return []
