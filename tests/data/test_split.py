from __future__ import annotations

from pathlib import Path

import pytest

from data.discovery import scan
from data.errors import DataError
from data.split import SplitPolicy, make_manifest
from tests.data.helpers import make_classes, write_image


def test_official_split_keeps_testing_as_test_and_is_stratified(phantom_dir: Path) -> None:
    manifest = make_manifest(scan(phantom_dir), SplitPolicy("official", val_fraction=0.25, seed=1))
    counts = manifest.counts()
    assert counts["test"] == {c: 4 for c in manifest.classes}
    assert counts["val"] == {c: 3 for c in manifest.classes}
    assert counts["train"] == {c: 9 for c in manifest.classes}
    assert all(e.path.startswith("Testing/") for e in manifest.split("test"))


def test_pooled_split_is_stratified_over_all_images(phantom_dir: Path) -> None:
    manifest = make_manifest(scan(phantom_dir), SplitPolicy("pooled", 0.25, 0.25, seed=1))
    counts = manifest.counts()
    for split in ("val", "test"):
        assert counts[split] == {c: 4 for c in manifest.classes}
    assert sum(sum(c.values()) for c in counts.values()) == 64
    assert any(e.path.startswith("Training/") for e in manifest.split("test"))


def test_split_is_deterministic_for_a_seed_and_changes_with_it(phantom_dir: Path) -> None:
    dataset = scan(phantom_dir)
    a = make_manifest(dataset, SplitPolicy("pooled", seed=5))
    b = make_manifest(scan(phantom_dir), SplitPolicy("pooled", seed=5))
    c = make_manifest(dataset, SplitPolicy("pooled", seed=6))
    assert a.entries == b.entries and a.fingerprint == b.fingerprint
    assert a.entries != c.entries and a.fingerprint != c.fingerprint


def test_fingerprint_does_not_depend_on_where_the_data_lives(
    phantom_dir: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(phantom_dir, copy)
    policy = SplitPolicy("official", seed=2)
    assert (
        make_manifest(scan(copy), policy).fingerprint
        == make_manifest(scan(phantom_dir), policy).fingerprint
    )


def test_fingerprint_changes_when_a_file_changes(phantom_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(phantom_dir, copy)
    policy = SplitPolicy("official", seed=2)
    before = make_manifest(scan(copy), policy).fingerprint
    write_image(copy / "Training" / "glioma_tumor" / "image(1).jpg", seed=99)
    assert make_manifest(scan(copy), policy).fingerprint != before


def test_name_collisions_lose_no_image(tmp_path: Path) -> None:
    for split in ("Training", "Testing"):
        for ci, cls in enumerate(("glioma_tumor", "no_tumor")):
            for i in range(6):
                # distinct seeds (hash() of a tuple of str changes per process)
                seed = 100 * (split == "Testing") + 10 * ci + i
                write_image(tmp_path / split / cls / f"image({i}).jpg", seed=seed)
    for policy in ("official", "pooled"):
        manifest = make_manifest(scan(tmp_path), SplitPolicy(policy, 0.2, 0.2, seed=0))
        assert len(manifest.entries) == 24
        assert len({e.path for e in manifest.entries}) == 24


def test_pooled_keeps_duplicates_in_one_split(tmp_path: Path) -> None:
    make_classes(tmp_path / "Training", ["glioma", "notumor"], 10, seed=1)
    make_classes(tmp_path / "Testing", ["glioma", "notumor"], 3, seed=2)
    # Copies of the same image in Training and Testing, under other names.
    for i in range(3):
        write_image(tmp_path / "Testing" / "glioma" / f"copy{i}.jpg", seed=1000 + i)
    dataset = scan(tmp_path)
    assert len(dataset.duplicates()) == 3
    for seed in range(5):
        manifest = make_manifest(dataset, SplitPolicy("pooled", 0.2, 0.2, seed=seed))
        assert manifest.cross_split_duplicates() == []
    official = make_manifest(dataset, SplitPolicy("official", seed=0))
    assert official.cross_split_duplicates() == [] and len(official.dropped) == 3


def test_official_needs_a_test_folder(tmp_path: Path) -> None:
    make_classes(tmp_path, ["a", "b"], 4)
    with pytest.raises(DataError, match="pooled"):
        make_manifest(scan(tmp_path), SplitPolicy("official"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy": "random"},
        {"val_fraction": 0},
        {"test_fraction": 1.0},
        {"val_fraction": 0.6, "test_fraction": 0.5},
    ],
)
def test_bad_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(DataError):
        SplitPolicy(**kwargs)


def _with_a_test_copy(phantom_dir: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of the phantom set in which one Testing image copies a Training image."""
    import shutil

    root = tmp_path / "leaky"
    shutil.copytree(phantom_dir, root)
    source = sorted((root / "Training" / "glioma_tumor").iterdir())[0]
    copy = root / "Testing" / "glioma_tumor" / "copied.jpg"
    copy.write_bytes(source.read_bytes())
    return root, str(copy.relative_to(root)), str(source.relative_to(root))


def test_official_drops_test_images_that_copy_a_training_image(
    phantom_dir: Path, tmp_path: Path
) -> None:
    root, copy, source = _with_a_test_copy(phantom_dir, tmp_path)
    manifest = make_manifest(scan(root), SplitPolicy("official", val_fraction=0.25, seed=1))
    assert [(d.path, d.copy_of) for d in manifest.dropped] == [(copy, source)]
    assert copy not in {e.path for e in manifest.entries}
    assert manifest.counts()["test"] == {c: 4 for c in manifest.classes}
    assert manifest.cross_split_duplicates() == []


def test_older_policies_keep_the_test_copy(phantom_dir: Path, tmp_path: Path) -> None:
    """exact-train-val (studies made before the policy was recorded) and off keep it."""
    root, copy, _ = _with_a_test_copy(phantom_dir, tmp_path)
    for dedup in ("exact-train-val", "off"):
        manifest = make_manifest(scan(root), SplitPolicy("official", 0.25, seed=1, dedup=dedup))
        assert manifest.dropped == ()
        assert copy in {e.path for e in manifest.split("test")}
        assert manifest.cross_split_duplicates() != []


def test_pooled_off_no_longer_keeps_copies_together(tmp_path: Path) -> None:
    make_classes(tmp_path, ["a", "b"], 20)
    for i in range(10):
        (tmp_path / "a" / f"copy{i}.jpg").write_bytes((tmp_path / "a" / "img0.jpg").read_bytes())
    split_of = {
        dedup: {
            e.path: e.split
            for e in make_manifest(
                scan(tmp_path), SplitPolicy("pooled", 0.3, 0.3, 4, dedup)
            ).entries
        }
        for dedup in ("exact", "off")
    }
    group = ["a/img0.jpg"] + [f"a/copy{i}.jpg" for i in range(10)]
    assert len({split_of["exact"][p] for p in group}) == 1
    assert len({split_of["off"][p] for p in group}) > 1


def test_an_unknown_duplicate_policy_is_refused() -> None:
    with pytest.raises(DataError, match="duplicate policy"):
        SplitPolicy(dedup="fuzzy")
