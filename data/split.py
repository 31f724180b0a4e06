"""Split policies and the split manifest.

``official`` keeps the dataset's own test folder as the test split and splits ``Training/``
into train and validation; ``pooled`` pools every image and draws train, validation and test
itself. Both are stratified by class and deterministic for a seed. Under the ``near``
duplicate policy (the default) no image leaks between splits: ``pooled`` keeps every group
of exact copies (same sha256) and near copies (perceptual hash within ``near_threshold``
bits, `data.near_dup`) in one split, and ``official`` drops from the test split every
Testing image that copies a Training image (`SplitManifest.dropped`). A group that spans
classes (a label conflict) never reaches the test split. ``exact`` does the same for exact
copies only (studies made before near duplicates were found).

With patient groups (`data.groups`: a path -> group mapping) a patient's images stay in one
split too, joined with their copies (two patients whose images copy each other become one
group); under ``official`` the Testing images of a patient who also has Training images are
dropped (kind ``patient``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from data.dedup import (
    DroppedImage,
    all_groups,
    exact_groups,
    exact_test_drops,
    is_conflict,
    official_drops,
)
from data.discovery import Dataset, ImageRecord
from data.errors import DataError
from data.medical import MedicalSettings
from data.near_dup import DEFAULT_NEAR_THRESHOLD, HASH_BITS, MAX_NEAR_THRESHOLD, union_find

SPLITS = ("train", "val", "test")
POLICIES = ("official", "pooled")
# near: exact and near copies stay in one split, official drops test images that copy a
# training image, label conflicts stay out of test; exact: the same for exact copies only;
# exact-train-val: copies are grouped within train and val only, test copies kept
# (studies made before the policy was recorded); off: no grouping.
DEDUP_POLICIES = ("exact", "near", "exact-train-val", "off")


@dataclass(frozen=True)
class SplitPolicy:
    """How to split a dataset.

    Attributes:
        policy: ``official`` or ``pooled``.
        val_fraction: Fraction of the training pool (official) or of all images (pooled)
            held out for validation.
        test_fraction: Fraction of all images held out for test (pooled only).
        seed: Seed of the shuffles.
        dedup: Duplicate policy, one of `DEDUP_POLICIES`.
        near_threshold: Hamming distance (bits of `HASH_BITS`) up to which two images are
            near copies under ``dedup: near``; `DEFAULT_NEAR_THRESHOLD` is measured.
    """

    policy: str = "official"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    dedup: str = "near"
    near_threshold: int = DEFAULT_NEAR_THRESHOLD

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise DataError(
                f"unknown split policy {self.policy!r}; choose one of {', '.join(POLICIES)}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise DataError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise DataError("val_fraction + test_fraction must be below 1")
        if self.dedup not in DEDUP_POLICIES:
            raise DataError(
                f"unknown duplicate policy {self.dedup!r}; choose one of {', '.join(DEDUP_POLICIES)}"
            )
        if not 0 <= self.near_threshold <= MAX_NEAR_THRESHOLD:
            raise DataError(
                f"near_threshold must be between 0 and {MAX_NEAR_THRESHOLD} bits (of "
                f"{HASH_BITS}), got {self.near_threshold}"
            )


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    label: str
    split: str
    sha256: str


@dataclass(frozen=True)
class SplitManifest:
    """Every image of a dataset with its label and split.

    The fingerprint hashes classes and entries only (not the root folder), so any machine
    holding the same files gets the same fingerprint.

    `duplicates` holds every group of copies that must stay together (exact copies, and near
    copies under ``dedup: near``); `exact_duplicates` the exact ones only; `label_conflicts`
    the groups whose images carry more than one label. With patient groups, `patients` holds
    each image's group (path, group) and `together` the groups of paths kept in one split
    and fold: a patient's images with their copies.
    """

    layout: str
    classes: tuple[str, ...]
    policy: SplitPolicy
    entries: tuple[ManifestEntry, ...]
    unreadable: tuple[str, ...] = ()
    duplicates: tuple[tuple[str, ...], ...] = ()
    dropped: tuple[DroppedImage, ...] = ()
    exact_duplicates: tuple[tuple[str, ...], ...] = ()
    label_conflicts: tuple[tuple[str, ...], ...] = ()
    patients: tuple[tuple[str, str], ...] = ()
    together: tuple[tuple[str, ...], ...] = ()
    decode: MedicalSettings | None = None  # how DICOM and NIfTI slices are read, if any

    @property
    def kept_together(self) -> tuple[tuple[str, ...], ...]:
        """The groups of paths that must share a split and a fold: patients with their
        copies where the study has patient groups, else the copies."""
        return self.together if self.patients else self.duplicates

    def group_summary(self) -> dict[str, Any]:
        """``count`` of patient groups, images in the ``largest``, how many sit in more than
        one split (``spanning_splits``, 0 by construction) and the groups in each split
        (``per_split``)."""
        split_of = {e.path: e.split for e in self.entries}
        members: dict[str, list[str]] = defaultdict(list)
        for path, group in self.patients:
            members[group].append(path)
        where = [{split_of[p] for p in paths if p in split_of} for paths in members.values()]
        largest = max((len(paths) for paths in members.values()), default=0)
        return {
            "count": len(members),
            "largest": largest,
            "spanning_splits": sum(len(splits) > 1 for splits in where),
            "per_split": {s: sum(s in splits for splits in where) for s in SPLITS},
        }

    @property
    def fingerprint(self) -> str:
        content: dict = {
            "classes": list(self.classes),
            "entries": [[e.path, e.label, e.split, e.sha256] for e in self.entries],
        }
        if self.dropped:  # absent when nothing is dropped: older studies keep their fingerprint
            content["dropped"] = [
                [d.path, d.copy_of]
                if d.kind == "exact"
                else [d.path, d.copy_of, d.kind, d.distance]
                for d in self.dropped
            ]
        if self.patients:  # absent without patient groups, as above
            content["groups"] = [list(pair) for pair in self.patients]
        if self.decode is not None:  # absent without DICOM or NIfTI slices
            content["decode"] = asdict(self.decode)
        payload = json.dumps(content, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def split(self, name: str) -> tuple[ManifestEntry, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}")
        return tuple(e for e in self.entries if e.split == name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split, per class."""
        out = {s: dict.fromkeys(self.classes, 0) for s in SPLITS}
        for e in self.entries:
            out[e.split][e.label] += 1
        return out

    def test_balance_warnings(self) -> list[str]:
        """One line per class that dropping copies of training images left thin in the test
        split: under half of its Testing images kept, or a share of the test split under
        half (or over twice) its share of training. Such a test split measures little of
        that class; ``split: pooled`` re-splits every image with its copies kept together."""
        if not self.dropped:
            return []
        counts = self.counts()
        dropped = dict.fromkeys(self.classes, 0)
        for d in self.dropped:
            if d.label in dropped:
                dropped[d.label] += 1
        train = {c: counts["train"][c] + counts["val"][c] for c in self.classes}
        kept_total, train_total = sum(counts["test"].values()), sum(train.values())
        lines = []
        for c in self.classes:
            kept, before = counts["test"][c], counts["test"][c] + dropped[c]
            if before == 0 or train_total == 0:
                continue
            share = kept / kept_total if kept_total else 0.0
            train_share = train[c] / train_total
            if kept * 2 < before or not train_share / 2 <= share <= train_share * 2:
                lines.append(
                    f"warning: test class {c} keeps {kept} of its {before} images once "
                    f"copies of training images are removed, {share:.1%} of the test split "
                    f"against {train_share:.1%} of training: use split: pooled for a test "
                    "split that represents every class"
                )
        return lines

    def cross_split_duplicates(self) -> list[list[str]]:
        """Duplicate groups whose copies sit in more than one split (leaks)."""
        split_of = {e.path: e.split for e in self.entries}
        return [
            list(g) for g in self.duplicates if len({split_of[p] for p in g if p in split_of}) > 1
        ]

    def to_dict(self) -> dict:
        return {
            "layout": self.layout,
            "classes": list(self.classes),
            "policy": asdict(self.policy),
            "fingerprint": self.fingerprint,
            "entries": [asdict(e) for e in self.entries],
            "unreadable": list(self.unreadable),
            "duplicates": [list(g) for g in self.duplicates],
            "dropped": [asdict(d) for d in self.dropped],
            "exact_duplicates": [list(g) for g in self.exact_duplicates],
            "label_conflicts": [list(g) for g in self.label_conflicts],
            "patients": [list(pair) for pair in self.patients],
            "together": [list(g) for g in self.together],
            "decode": asdict(self.decode) if self.decode is not None else None,
        }


def _groups(records: list[ImageRecord], policy: SplitPolicy) -> list[list[ImageRecord]]:
    """Records grouped by content hash (and perceptual hash under ``near``; each alone when
    `dedup` is off), in a machine-independent order."""
    if policy.dedup == "near":
        return all_groups(records, policy.near_threshold)
    by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_hash[r.path if policy.dedup == "off" else r.sha256].append(r)
    groups = [sorted(g, key=lambda r: r.path) for g in by_hash.values()]
    return sorted(groups, key=lambda g: g[0].path)


def _by_patient(
    groups: list[list[ImageRecord]], group_of: Mapping[str, str]
) -> list[list[ImageRecord]]:
    """`groups` joined (transitively) where they hold images of one patient group; each
    sorted by path, the groups by first path. Without patient groups, `groups` itself."""
    if not group_of:
        return groups
    first: dict[str, int] = {}
    pairs_i: list[int] = []
    pairs_j: list[int] = []
    for index, group in enumerate(groups):
        for record in group:
            seen = first.setdefault(group_of[record.path], index)
            if seen != index:
                pairs_i.append(seen)
                pairs_j.append(index)
    merged = union_find(len(groups), np.asarray(pairs_i, np.int64), np.asarray(pairs_j, np.int64))
    joined = {i for m in merged for i in m}
    out = [sorted((r for i in m for r in groups[i]), key=lambda r: r.path) for m in merged]
    out += [g for i, g in enumerate(groups) if i not in joined]
    return sorted(out, key=lambda g: g[0].path)


def _patient_drops(together: list[list[ImageRecord]], gone: set[str]) -> list[DroppedImage]:
    """Under ``official``: the Testing images (not dropped already) of every patient group
    that also holds a Training image, as copies of its first Training image."""
    drops = []
    for group in together:
        trains = [r.path for r in group if r.source != "Testing"]
        if trains:
            drops += [
                DroppedImage(r.path, trains[0], "patient", 0, r.label)
                for r in group
                if r.source == "Testing" and r.path not in gone
            ]
    return drops


def _assign(
    groups: list[list[ImageRecord]],
    fractions: dict[str, float],
    rest: str,
    rng: np.random.Generator,
) -> dict[str, str]:
    """Stratified assignment of whole duplicate groups to splits.

    Each class's groups are shuffled, then the first ones fill each split in `fractions`
    up to its share of that class's images; the remainder goes to `rest`.
    """
    by_label: dict[str, list[list[ImageRecord]]] = defaultdict(list)
    for g in groups:
        by_label[g[0].label].append(g)
    assignment: dict[str, str] = {}
    for label in sorted(by_label):
        class_groups = by_label[label]
        order = rng.permutation(len(class_groups))
        n_images = sum(len(g) for g in class_groups)
        targets = {name: int(round(frac * n_images)) for name, frac in fractions.items()}
        filled = dict.fromkeys(fractions, 0)
        for idx in order:
            group = class_groups[idx]
            split = rest
            for name in fractions:
                if filled[name] < targets[name]:
                    split = name
                    filled[name] += len(group)
                    break
            for r in group:
                assignment[r.path] = split
    return assignment


def _split_near(
    records: list[ImageRecord],
    policy: SplitPolicy,
    rng: np.random.Generator,
    group_of: Mapping[str, str],
) -> tuple[dict[str, str], list[DroppedImage], list[list[ImageRecord]], list[list[ImageRecord]]]:
    """The ``near`` policy: the assignment, the dropped Testing images, the groups of
    copies and the groups kept together (copies joined by patient). Label conflicts go to
    train whole with their patients (official: their Testing members are dropped)."""
    groups = _groups(records, policy)
    together = _by_patient(groups, group_of)
    dropped, assignment = [], {}
    fractions = {"test": policy.test_fraction, "val": policy.val_fraction}
    if policy.policy == "official":
        dropped = official_drops(groups)
        if group_of:
            patient = _patient_drops(together, {d.path for d in dropped})
            dropped = sorted(dropped + patient, key=lambda d: d.path)
        gone = {d.path for d in dropped}
        assignment = {r.path: "test" for r in records if r.source == "Testing"}
        assignment = {p: s for p, s in assignment.items() if p not in gone}
        fractions = {"val": policy.val_fraction}
    conflicted = {r.path for g in groups if is_conflict(g) for r in g}
    free = []
    for g in together:
        pool = [r for r in g if r.source != "Testing" or policy.policy == "pooled"]
        if pool and any(r.path in conflicted for r in g):
            assignment.update(dict.fromkeys((r.path for r in pool), "train"))
        elif pool:
            free.append(pool)
    assignment.update(_assign(free, fractions, "train", rng))
    return assignment, dropped, groups, together


def _split_by_content(
    records: list[ImageRecord],
    policy: SplitPolicy,
    rng: np.random.Generator,
    group_of: Mapping[str, str],
) -> tuple[dict[str, str], list[DroppedImage], list[list[ImageRecord]]]:
    """The ``exact``, ``exact-train-val`` and ``off`` policies (unchanged since they were
    recorded, so that old studies keep their fingerprints), and the groups kept together."""
    together = _by_patient(_groups(records, policy), group_of)
    if policy.policy == "pooled":
        fractions = {"test": policy.test_fraction, "val": policy.val_fraction}
        return _assign(together, fractions, "train", rng), [], together
    dropped = exact_test_drops(records) if policy.dedup == "exact" else []
    if group_of:
        patient = _patient_drops(together, {d.path for d in dropped})
        dropped = sorted(dropped + patient, key=lambda d: d.path)
    gone = {d.path for d in dropped}
    assignment = {r.path: "test" for r in records if r.source == "Testing" and r.path not in gone}
    pool = [r for r in records if r.source != "Testing"]
    pool_groups = _by_patient(_groups(pool, policy), group_of)
    assignment.update(_assign(pool_groups, {"val": policy.val_fraction}, "train", rng))
    return assignment, dropped, together


def _paths(groups: list[list[ImageRecord]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(r.path for r in g) for g in groups)


def make_manifest(
    dataset: Dataset, policy: SplitPolicy, groups: Mapping[str, str] | None = None
) -> SplitManifest:
    """Assign every readable image of `dataset` to train, val or test.

    Args:
        dataset: What `data.discovery.scan` found.
        policy: The split policy.
        groups: Each image's patient group (`data.groups.dataset_groups`); none: {}.

    Raises:
        DataError: ``official`` was asked for a dataset without a test folder.
    """
    group_of = dict(groups or {})
    rng = np.random.default_rng(policy.seed)
    records = list(dataset.images)
    if policy.policy == "official" and not dataset.has_official_test:
        raise DataError(
            f"split 'official' needs Training/ and Testing/ folders, but {dataset.root} "
            "has none; use split 'pooled'"
        )
    exact = exact_groups(records)
    if policy.dedup == "near":
        assignment, dropped, copies, together = _split_near(records, policy, rng, group_of)
        copies = [g for g in copies if len(g) > 1]
    else:
        assignment, dropped, together = _split_by_content(records, policy, rng, group_of)
        copies = exact
    entries = tuple(
        ManifestEntry(r.path, r.label, assignment[r.path], r.sha256)
        for r in sorted(records, key=lambda r: r.path)
        if r.path in assignment
    )
    manifest = SplitManifest(
        layout=dataset.layout,
        classes=dataset.classes,
        policy=policy,
        entries=entries,
        unreadable=dataset.unreadable,
        duplicates=_paths(copies),
        dropped=tuple(dropped),
        exact_duplicates=_paths(exact),
        label_conflicts=_paths([g for g in copies if is_conflict(g)]),
        patients=tuple(sorted(group_of.items())),
        decode=dataset.medical if dataset.has_slices else None,
        together=_paths([g for g in together if len(g) > 1]) if group_of else (),
    )
    counts = manifest.counts()
    for split in ("train", "val"):
        if sum(counts[split].values()) == 0:
            groups = len(set(group_of.values()))
            why = (
                f"its {groups} patient group{'s' if groups != 1 else ''} cannot fill train "
                "and validation"
                if group_of and groups < 10
                else "the dataset is too small for these fractions"
            )
            raise DataError(f"split {split!r} is empty: {why}")
    return manifest
