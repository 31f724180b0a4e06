"""Cross-validation folds over a study's train+val pool (never its test split).

`finalize` re-scores trials on stratified K-fold cross-validation of train and validation
together. Copies of one image, and a patient's images where the study has patient groups
(`SplitManifest.kept_together`), share a group, and scikit-learn's `StratifiedGroupKFold`
keeps a group inside one fold, so no image is scored on a fold whose training part holds its
copy or its patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.split import SplitManifest
from search.errors import InputError

POOL_SPLITS = ("train", "val")  # the order `load_train_val` decodes them in


@dataclass(frozen=True)
class Fold:
    """One fold: indices into the pool of what it trains on and what it holds out."""

    index: int  # 0-based
    train: np.ndarray
    held_out: np.ndarray


def pool_paths(manifest: SplitManifest) -> list[str]:
    """The path of each pool image: train, then val, the order of
    `search.training.data_subsets.pool_arrays`."""
    return [e.path for split in POOL_SPLITS for e in manifest.split(split)]


def pool_labels(manifest: SplitManifest) -> np.ndarray:
    """The class index of each pool image, in `pool_paths` order."""
    index = {name: i for i, name in enumerate(manifest.classes)}
    labels = [index[e.label] for split in POOL_SPLITS for e in manifest.split(split)]
    return np.asarray(labels, dtype=np.int32)


def group_ids(paths: list[str], duplicates: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """One group number per path: copies share their group's, every other image has its own."""
    index = {p: i for i, p in enumerate(paths)}
    groups = np.arange(len(paths))
    for group in duplicates:
        members = [index[p] for p in group if p in index]
        if members:
            groups[members] = min(members)
    return groups


def check_folds(k: int, y: np.ndarray, groups: np.ndarray, classes: tuple[str, ...]) -> None:
    """Refuse a fold count the pool cannot support (`InputError`, one line).

    Every class must have at least `k` images (groups of copies count once), so that each
    fold holds out every class.
    """
    if k < 2:
        raise InputError(f"--folds must be at least 2, got {k}")
    counts = {
        name: len(np.unique(groups[y == i])) for i, name in enumerate(classes) if np.any(y == i)
    }
    if not counts:
        raise InputError("the train and validation splits hold no image")
    smallest = min(counts, key=lambda name: counts[name])
    if k > counts[smallest]:
        raise InputError(
            f"--folds {k} is more than class {smallest!r} holds in train+val "
            f"({counts[smallest]} distinct images); use --folds 2 to {counts[smallest]}"
        )


def make_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[Fold]:
    """Stratified K folds that keep each group whole, shuffled with `seed`."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    dummy = np.zeros((len(y), 1))
    return [
        Fold(i, np.sort(train), np.sort(held_out))
        for i, (train, held_out) in enumerate(splitter.split(dummy, y, groups))
    ]
