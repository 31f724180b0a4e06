"""A study's data on this machine: scanned, split as the study says, checked against the
study's fingerprint, decoded once per process.

Trials get `TrainVal`, which has no test split; only `train-best` calls `load_test`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.decode import SplitArrays, load_split
from data.discovery import scan
from data.groups import dataset_groups, group_warnings
from data.split import SplitManifest, SplitPolicy, make_manifest
from search.config import StudyConfig
from search.errors import InputError


@dataclass(frozen=True)
class StudyData:
    root: Path
    manifest: SplitManifest
    group_warnings: tuple[str, ...] = ()  # DICOM PatientIDs that look unusable

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    def dropped_warning(self) -> str | None:
        """One line about test images left out because they copy training images (or are
        label conflicts); it says so when near copies are more than 5 % of the test split."""
        dropped = self.manifest.dropped
        if not dropped:
            return None
        near = sum(d.kind != "exact" for d in dropped)
        share = near / (len(dropped) + sum(self.manifest.counts()["test"].values()))
        many = f"; near copies are {share:.0%} of the test split" if share > 0.05 else ""
        return (
            f"warning: {len(dropped)} test image{'s' if len(dropped) != 1 else ''} of {self.root} "
            f"copy a training image (or an image of another class) and are left out of the "
            f"test split{many} (tumor-search data check lists them)"
        )

    def data_warnings(self) -> list[str]:
        """The lines `study create` and `run` print about the split: dropped copies, and
        test classes they left thin."""
        dropped = self.dropped_warning()
        lines = ([dropped] if dropped else []) + self.manifest.test_balance_warnings()
        return [*self.group_warnings, *lines]

    def counts(self) -> dict[str, int]:
        return {
            split: sum(per_class.values()) for split, per_class in self.manifest.counts().items()
        }


@dataclass(frozen=True)
class TrainVal:
    """What a trial may see: the train and validation splits, never the test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: tuple[str, ...]
    image_size: int
    seconds: float
    from_cache: bool
    fingerprint: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def prepare(config: StudyConfig, data_dir: str | os.PathLike[str] | None = None) -> StudyData:
    """Scan the data folder (`data_dir`, else the config's path), read its patient groups
    and split it as configured.

    Raises:
        DataError: the folder is unusable (missing, empty, unreadable classes, ...), or an
            image has no patient group.
    """
    root = Path(data_dir if data_dir is not None else config.data.path).expanduser()
    d = config.data
    dataset = scan(root, medical=d.medical())
    policy = SplitPolicy(
        d.split, d.val_fraction, d.test_fraction, d.seed, d.dedup, d.near_threshold
    )
    groups = dataset_groups(dataset, d.groups, d.group_pattern)
    warnings = () if d.groups or d.group_pattern else tuple(group_warnings(dataset))
    return StudyData(dataset.root, make_manifest(dataset, policy, groups), warnings)


def check_matches(
    data: StudyData, study_name: str, expected_fingerprint: str, expected_counts: dict | None
) -> None:
    """Refuse data that differs from the study's (a different copy, a changed file).

    Raises:
        InputError: the fingerprints differ; the message says how the copies differ.
    """
    if data.fingerprint == expected_fingerprint:
        return
    local = data.counts()
    detail = ""
    if expected_counts:
        ours = sum(local.values())
        theirs = sum(expected_counts.values())
        detail = (
            f" ({ours} images here, {theirs} in the study)"
            if ours != theirs
            else " (same number of images, but different files or labels)"
        )
    raise InputError(
        f"data at {data.root} does not match study {study_name!r}: fingerprint "
        f"{data.fingerprint[:12]} here, {expected_fingerprint[:12]} in the study{detail}; "
        "use the same copy of the dataset on every machine"
    )


def load_train_val(data: StudyData, image_size: int) -> TrainVal:
    """Decode (or read from the cache) the train and validation splits."""
    train = load_split(data.manifest, data.root, "train", image_size)
    val = load_split(data.manifest, data.root, "val", image_size)
    return TrainVal(
        x_train=train.x,
        y_train=train.y,
        x_val=val.x,
        y_val=val.y,
        classes=data.classes,
        image_size=image_size,
        seconds=train.seconds + val.seconds,
        from_cache=train.from_cache and val.from_cache,
        fingerprint=data.fingerprint,
    )


def load_test(data: StudyData, image_size: int) -> SplitArrays:
    """The held-out test split: for `train-best` only, never for a trial."""
    test = load_split(data.manifest, data.root, "test", image_size)
    if len(test.y) == 0:
        raise InputError(f"the test split of {data.root} is empty")
    return test
