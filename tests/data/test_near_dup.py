"""Near duplicates: the perceptual hash of the scan, transitive grouping, and the splits
that keep near copies (and label conflicts) out of the test split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data.discovery import scan
from data.near_dup import (
    DEFAULT_NEAR_THRESHOLD,
    HASH_BITS,
    distances,
    hash_array,
    near_groups,
    near_pairs,
    union_find,
)
from data.split import DEDUP_POLICIES, SplitPolicy, make_manifest
from tests.data.helpers import near_copy

COPIES = ("jpeg", "resize", "shift", "brightness", "png")


def _flip(hex_hash: str, bits: range) -> str:
    value = int(hex_hash, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:0{HASH_BITS // 4}x}"


def test_union_find_joins_groups_transitively() -> None:
    groups = union_find(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert groups == [[0, 1, 2], [4, 5]]
    # a ~ b and b ~ c, a and c too far apart: still one group.
    a = "0" * (HASH_BITS // 4)
    b = _flip(a, range(0, 20))
    c = _flip(b, range(20, 40))
    far = _flip(a, range(100, 200))
    assert int(distances(hash_array([a]), hash_array([c]))[0, 0]) == 40 > DEFAULT_NEAR_THRESHOLD
    assert near_groups([a, far, c, b], DEFAULT_NEAR_THRESHOLD) == [[0, 2, 3]]
    assert near_groups([a, "", a], 0) == [[0, 2]]  # unknown hashes match nothing


def test_blocked_pairs_equal_every_pair() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(40, HASH_BITS // 64), dtype=np.uint64)
    hashes[7] = hashes[3]
    full = distances(hashes, hashes)
    i, j, d = near_pairs(hashes, 120, block=6)
    expected = {(a, b) for a in range(40) for b in range(a + 1, 40) if full[a, b] <= 120}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
    assert (d == full[i, j]).all() and (3, 7) in expected


def test_scan_hashes_each_image_once_and_copies_hash_close(
    phantom_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(phantom_dir, root)
    source = root / "Training" / "glioma_tumor" / "image(1).jpg"
    for how in COPIES:
        near_copy(source, root / "Training" / "glioma_tumor" / f"copy_{how}.jpg", how)
    records = {r.path: r for r in scan(root).images}
    assert all(len(r.phash) == HASH_BITS // 4 for r in records.values())
    original = hash_array([records["Training/glioma_tumor/image(1).jpg"].phash])
    for how in COPIES:
        copy = hash_array([records[f"Training/glioma_tumor/copy_{how}.jpg"].phash])
        assert int(distances(original, copy)[0, 0]) <= DEFAULT_NEAR_THRESHOLD, how
    others = hash_array([r.phash for p, r in records.items() if "copy_" not in p])
    d = distances(others, others)
    assert d[np.triu_indices(len(d), 1)].min() > DEFAULT_NEAR_THRESHOLD  # distinct phantoms


def _with_near_copies(phantom_dir: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Phantoms plus near copies of Training images under Testing/ (one of them filed under
    another class) and a Testing-only pair across classes; copy -> original."""
    root = tmp_path / "data"
    shutil.copytree(phantom_dir, root)
    planted = {}
    for i, how in enumerate(COPIES):
        original = f"Training/glioma_tumor/image({i + 1}).jpg"
        folder = "meningioma_tumor" if how == "png" else "glioma_tumor"  # png: label conflict
        copy = f"Testing/{folder}/near_{how}.{'png' if how == 'png' else 'jpg'}"
        near_copy(root / original, root / copy, how)
        planted[copy] = original
    near_copy(
        root / "Testing/no_tumor/image(1).jpg", root / "Testing/pituitary_tumor/x.jpg", "jpeg"
    )
    return root, planted


def test_official_drops_near_copies_of_training_images(phantom_dir: Path, tmp_path: Path) -> None:
    root, planted = _with_near_copies(phantom_dir, tmp_path)
    manifest = make_manifest(scan(root), SplitPolicy("official", 0.25, seed=1))
    dropped = {d.path: d for d in manifest.dropped}
    assert {p: dropped[p].copy_of for p in planted} == planted
    assert all(dropped[p].kind == "near" for p in planted)
    assert all(0 <= dropped[p].distance <= DEFAULT_NEAR_THRESHOLD for p in planted)
    # The Testing-only pair across classes: both kept out of test, as a label conflict.
    conflict = {"Testing/no_tumor/image(1).jpg", "Testing/pituitary_tumor/x.jpg"}
    assert {p for p, d in dropped.items() if d.kind == "conflict"} == conflict
    assert set(dropped) == set(planted) | conflict
    assert not {e.path for e in manifest.split("test")} & set(dropped)
    conflicts = {frozenset(g) for g in manifest.label_conflicts}
    assert frozenset(conflict) in conflicts
    assert (
        frozenset(
            {
                "Testing/meningioma_tumor/near_png.png",
                planted["Testing/meningioma_tumor/near_png.png"],
            }
        )
        in conflicts
    )
    # dedup exact keeps the near copies in test (and its fingerprint format).
    exact = make_manifest(scan(root), SplitPolicy("official", 0.25, seed=1, dedup="exact"))
    testing = {r.path for r in scan(root).images if r.source == "Testing"}
    assert {e.path for e in exact.split("test")} == testing and not exact.dropped


def test_pooled_keeps_near_groups_in_one_split_and_conflicts_in_train(
    phantom_dir: Path, tmp_path: Path
) -> None:
    root, planted = _with_near_copies(phantom_dir, tmp_path)
    dataset = scan(root)
    paths = sorted(r.path for r in dataset.images)
    across = frozenset({"Testing/no_tumor/image(1).jpg", "Testing/pituitary_tumor/x.jpg"})
    expected = {frozenset(pair) for pair in planted.items()} | {across}
    png = "Testing/meningioma_tumor/near_png.png"
    conflicts = {across, frozenset({png, planted[png]})}
    for seed in range(4):
        manifest = make_manifest(dataset, SplitPolicy("pooled", 0.25, 0.25, seed))
        kept = [e.path for e in manifest.entries]
        assert sorted(kept) == paths and not manifest.dropped  # every image, once
        split_of = {e.path: e.split for e in manifest.entries}
        groups = {frozenset(g) for g in manifest.duplicates}
        assert groups == expected, seed  # every planted pair, and nothing else
        assert all(len({split_of[p] for p in g}) == 1 for g in groups)
        assert {frozenset(g) for g in manifest.label_conflicts} == conflicts
        for group in conflicts:
            assert {split_of[p] for p in group} == {"train"}


def test_data_check_lists_near_copies_by_split_pair(phantom_dir: Path, tmp_path: Path) -> None:
    import json

    from tests.conftest import run_cli

    root, planted = _with_near_copies(phantom_dir, tmp_path)
    result = run_cli("data", "check", str(root), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    groups = {frozenset(m["path"] for m in g["members"]): g for g in summary["duplicate_groups"]}
    for copy, original in planted.items():
        group = groups[frozenset({copy, original})]
        assert group["kind"] == "near" and group["splits"] == "train-test"
        assert {m["split"] for m in group["members"]} == {"train", "val", "dropped"} & {
            m["split"] for m in group["members"]
        }
    assert summary["duplicates_by_splits"] == {"train-test": 5, "within test": 1}
    assert len(summary["label_conflicts"]) == 2
    dropped = {d["path"]: d for d in summary["dropped_test_duplicates"]}
    assert {p: dropped[p]["kind"] for p in planted} == dict.fromkeys(planted, "near")
    text = run_cli("data", "check", str(root), "--near-threshold", "0").stdout
    assert "duplicates:  1 group (0 exact, 1 near)" in text  # the lossless PNG re-save
    text = run_cli("data", "check", str(root)).stdout
    assert "train-test: 5 groups" in text and "label conflicts: 2 groups" in text
    assert "near_jpeg.jpg ~ Training/glioma_tumor/image(1).jpg (near, distance" in text


@pytest.mark.parametrize("value", [-1, HASH_BITS // 4 + 1])
def test_out_of_range_thresholds_are_bad_input(
    value: int, phantom_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import assert_bad_input, run_cli
    from tests.search.helpers import write_config

    flag = run_cli("data", "check", str(phantom_dir), "--near-threshold", str(value))
    assert_bad_input(flag, "--near-threshold", "between 0 and 64")
    config = write_config(tmp_path / "c.yaml", data={"near_threshold": value})
    from_config = run_cli("data", "check", str(phantom_dir), "--config", str(config))
    assert_bad_input(from_config, "data.near_threshold", "between 0 and 64")
    both = run_cli("data", "check", str(phantom_dir), "--config", str(config), "--dedup", "off")
    assert_bad_input(both, "--dedup cannot be combined with --config")


def test_every_stored_duplicate_policy_still_splits(phantom_dir: Path, tmp_path: Path) -> None:
    """Each duplicate policy a study may have recorded puts every image in exactly one split
    or drops it (the drops its policy calls for and no others), keeps Testing as the test
    split less those drops, and (all but ``off``) keeps exact copies in one split."""
    assert SplitPolicy().dedup == "near"
    assert SplitPolicy().near_threshold == DEFAULT_NEAR_THRESHOLD
    root, planted = _with_near_copies(phantom_dir, tmp_path)
    twins = {  # exact copies: within Training, and of a Training image under Testing
        "Training/glioma_tumor/twin.jpg": "Training/glioma_tumor/image(6).jpg",
        "Testing/glioma_tumor/twin.jpg": "Training/glioma_tumor/image(7).jpg",
    }
    for copy, original in twins.items():
        shutil.copyfile(root / original, root / copy)
    twin = "Training/glioma_tumor/twin.jpg"
    dataset = scan(root)
    paths = {r.path for r in dataset.images}
    training = {p for p in paths if p.startswith("Training/")}
    conflict = {"Testing/no_tumor/image(1).jpg", "Testing/pituitary_tumor/x.jpg"}
    test_twin = {"Testing/glioma_tumor/twin.jpg"}
    drops = {
        "near": set(planted) | conflict | test_twin,
        "exact": test_twin,
        "exact-train-val": set(),
        "off": set(),
    }
    assert set(drops) == set(DEDUP_POLICIES)
    for dedup, dropped in drops.items():
        manifest = make_manifest(dataset, SplitPolicy("official", 0.25, seed=1, dedup=dedup))
        kept = [e.path for e in manifest.entries]
        assert len(kept) == len(set(kept)) and set(kept) == paths - dropped, dedup
        assert {d.path for d in manifest.dropped} == dropped, dedup
        assert {e.path for e in manifest.split("test")} == paths - training - dropped, dedup
        assert {e.path for e in manifest.entries if e.split != "test"} == training, dedup
        assert manifest.counts()["val"] == dict.fromkeys(manifest.classes, 3), dedup  # 12 / 4
        pooled = make_manifest(dataset, SplitPolicy("pooled", 0.25, 0.25, 1, dedup))
        assert sorted(e.path for e in pooled.entries) == sorted(paths), dedup
        for split_of in ({e.path: e.split for e in m.entries} for m in (manifest, pooled)):
            assert dedup == "off" or split_of[twin] == split_of[twins[twin]], dedup


def test_study_data_warns_when_near_copies_are_over_5_percent_of_test(
    phantom_dir: Path, tmp_path: Path
) -> None:
    from search.study_data import StudyData

    root, planted = _with_near_copies(phantom_dir, tmp_path)
    near = make_manifest(scan(root), SplitPolicy("official", 0.25, seed=1))
    warning = StudyData(root, near).dropped_warning()
    assert warning and warning.startswith("warning: 7 test images") and "\n" not in warning
    assert "near copies are 32% of the test split" in warning  # 7 of 15 + 7
    exact = make_manifest(scan(phantom_dir), SplitPolicy("official", 0.25, seed=1))
    assert StudyData(phantom_dir, exact).dropped_warning() is None


def _reference_union_find(n: int, pairs_i: np.ndarray, pairs_j: np.ndarray) -> list[list[int]]:
    """The hand-written union-find that `union_find` replaced, kept to compare partitions."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(pairs_i.tolist(), pairs_j.tolist(), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for x in range(n):
        groups.setdefault(find(x), []).append(x)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


@pytest.mark.parametrize("seed", range(5))
def test_union_find_gives_the_hand_written_partition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    edges = int(rng.integers(0, n))
    pi, pj = rng.integers(0, n, edges), rng.integers(0, n, edges)  # self-loops and repeats too
    assert union_find(n, pi, pj) == _reference_union_find(n, pi, pj)
    assert union_find(0, pi[:0], pj[:0]) == []
