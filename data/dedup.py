"""Duplicate groups of a dataset's images, and what a split does with them.

A group is a set of images that must stay in one split: exact copies (same sha256) and,
under the ``near`` duplicate policy, near copies (perceptual hashes within the threshold,
`data.near_dup`), joined transitively. A group whose images carry more than one label is a
*label conflict*: the same slice filed under two classes; it never goes to the test split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data.discovery import ImageRecord
from data.near_dup import distances, hash_array, near_pairs, union_find


@dataclass(frozen=True)
class DroppedImage:
    """A Testing image left out of every split.

    ``kind`` is ``exact`` (its bytes equal a Training image's), ``near`` (its perceptual hash
    is within the threshold of a Training image's, directly or through other copies) or
    ``conflict`` (a near or exact copy of a Testing image of another class), or ``patient``
    (its patient group also holds Training images; `data.groups`); ``copy_of`` is the closest
    such image (for ``patient``: the group's first Training image) and ``distance`` their
    Hamming distance (0 for exact copies and patients).
    """

    path: str
    copy_of: str
    kind: str = "exact"
    distance: int = 0
    label: str = ""  # the class of the dropped image


def exact_groups(records: Sequence[ImageRecord]) -> list[list[ImageRecord]]:
    """Records with identical bytes, groups of two or more, sorted by path."""
    by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_hash[r.sha256].append(r)
    groups = [sorted(g, key=lambda r: r.path) for g in by_hash.values() if len(g) > 1]
    return sorted(groups, key=lambda g: g[0].path)


def all_groups(records: Sequence[ImageRecord], threshold: int) -> list[list[ImageRecord]]:
    """Every record in one group (singletons included): exact copies and perceptual hashes
    within `threshold` bits joined transitively; sorted by path, groups by first path."""
    ordered = sorted(records, key=lambda r: r.path)
    known = [i for i, r in enumerate(ordered) if r.phash]
    pi, pj, _ = near_pairs(hash_array([ordered[i].phash for i in known]), threshold)
    edges_i = [np.asarray(known, dtype=np.int64)[pi]] if len(pi) else []
    edges_j = [np.asarray(known, dtype=np.int64)[pj]] if len(pj) else []
    first: dict[str, int] = {}
    same_i: list[int] = []
    same_j: list[int] = []
    for i, r in enumerate(ordered):  # exact copies, also when a hash is unknown
        if r.sha256 in first:
            same_i.append(first[r.sha256])
            same_j.append(i)
        else:
            first[r.sha256] = i
    edges_i.append(np.asarray(same_i, dtype=np.int64))
    edges_j.append(np.asarray(same_j, dtype=np.int64))
    merged = union_find(len(ordered), np.concatenate(edges_i), np.concatenate(edges_j))
    in_group = {i for g in merged for i in g}
    groups = [[ordered[i] for i in g] for g in merged]
    groups += [[r] for i, r in enumerate(ordered) if i not in in_group]
    return sorted(groups, key=lambda g: g[0].path)


def is_conflict(group: Sequence[ImageRecord]) -> bool:
    """Whether a group holds more than one label."""
    return len({r.label for r in group}) > 1


def distance(a: ImageRecord, b: ImageRecord) -> int:
    """Hamming distance of two records' perceptual hashes (0 for identical bytes)."""
    if a.sha256 == b.sha256:
        return 0
    if not (a.phash and b.phash):
        return -1
    return int(distances(hash_array([a.phash]), hash_array([b.phash]))[0, 0])


def _closest(record: ImageRecord, others: Sequence[ImageRecord]) -> tuple[ImageRecord, int]:
    """The member of `others` nearest `record` (ties: first by path) and its distance."""
    scored = [(distance(record, o), o.path, o) for o in others]
    scored = [(d if d >= 0 else 1 << 30, p, o) for d, p, o in scored]
    d, _, other = min(scored, key=lambda t: (t[0], t[1]))
    return other, d


def exact_test_drops(records: Sequence[ImageRecord]) -> list[DroppedImage]:
    """Under ``dedup: exact``: the Testing images whose bytes equal a Training image's (the
    first such, by path)."""
    first_in_training: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r.path):
        if r.source != "Testing":
            first_in_training.setdefault(r.sha256, r.path)
    return [
        DroppedImage(r.path, first_in_training[r.sha256], label=r.label)
        for r in sorted(records, key=lambda r: r.path)
        if r.source == "Testing" and r.sha256 in first_in_training
    ]


def official_drops(groups: Sequence[Sequence[ImageRecord]]) -> list[DroppedImage]:
    """Under the official split: the Testing members of every group that also holds a
    Training image or that spans classes, sorted by path."""
    drops: list[DroppedImage] = []
    for group in groups:
        tests = [r for r in group if r.source == "Testing"]
        trains = [r for r in group if r.source != "Testing"]
        if not tests or not (trains or is_conflict(group)):
            continue
        for r in tests:
            exact = [o.path for o in trains if o.sha256 == r.sha256]
            if exact:
                drops.append(DroppedImage(r.path, exact[0], "exact", 0, r.label))
                continue
            if trains:
                other, d = _closest(r, trains)
                kind = "near"
            else:
                other, d = _closest(r, [o for o in tests if o.label != r.label])
                kind = "conflict"
            drops.append(DroppedImage(r.path, other.path, kind, d, r.label))
    return sorted(drops, key=lambda d: d.path)


def group_max_distance(group: Sequence[ImageRecord]) -> int:
    """The largest pairwise Hamming distance inside a group (0 for exact copies)."""
    known = [r.phash for r in group if r.phash]
    if len(known) < 2:
        return 0
    array = hash_array(known)
    return int(distances(array, array).max())
