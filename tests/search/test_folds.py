"""Cross-validation folds of finalize: stratified, duplicate groups whole, never the test split."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data.discovery import scan
from data.split import SplitPolicy, make_manifest
from search.errors import InputError
from search.results.folds import check_folds, group_ids, make_folds, pool_labels, pool_paths
from search.results.study_note import replace_section

COPIES = 5


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Phantom data with one training image copied COPIES - 1 times, and its manifest."""
    from data.synth import synthesize

    root = tmp_path_factory.mktemp("folds") / "data"
    synthesize(root, per_class=24, size=32, seed=5, test_fraction=0.25)
    source = sorted((root / "Training" / "glioma_tumor").iterdir())[0]
    for i in range(COPIES - 1):
        shutil.copy(source, source.with_name(f"copy{i}.jpg"))
    manifest = make_manifest(scan(root), SplitPolicy("official", 0.2, 0.15, 3, "exact"))
    return root, manifest


def test_folds_keep_a_duplicate_group_together_and_never_hold_test(planted) -> None:  # noqa: ANN001
    _, manifest = planted
    paths = pool_paths(manifest)
    group = next(g for g in manifest.duplicates if len(g) == COPIES)
    assert set(group) <= set(paths)
    test_paths = {e.path for e in manifest.split("test")}
    assert test_paths and not test_paths & set(paths)
    y = pool_labels(manifest)
    groups = group_ids(paths, manifest.duplicates)
    members = [paths.index(p) for p in group]
    for seed in range(4):
        folds = make_folds(y, groups, 3, seed)
        held = np.concatenate([f.held_out for f in folds])
        assert sorted(held.tolist()) == list(range(len(paths)))  # each image held out once
        for fold in folds:
            assert not set(fold.train) & set(fold.held_out)
            inside = [m in set(fold.held_out.tolist()) for m in members]
            assert all(inside) or not any(inside), (seed, fold.index)
            assert set(y[fold.held_out]) == set(range(len(manifest.classes)))


def test_fold_counts_out_of_range_are_refused(planted) -> None:  # noqa: ANN001
    _, manifest = planted
    paths = pool_paths(manifest)
    y, groups = pool_labels(manifest), group_ids(paths, manifest.duplicates)
    with pytest.raises(InputError, match="at least 2"):
        check_folds(1, y, groups, manifest.classes)
    # glioma has its copies counted once: fewer distinct images than the other classes
    distinct = len(np.unique(groups[y == 0]))
    assert distinct == int((y == 0).sum()) - (COPIES - 1)
    check_folds(distinct, y, groups, manifest.classes)
    with pytest.raises(InputError, match=f"class 'glioma' holds in train\\+val \\({distinct} "):
        check_folds(distinct + 1, y, groups, manifest.classes)


def test_replace_section_keeps_the_rest_of_the_note() -> None:
    note = "# study\n\nDescription.\n\n## Finalize (1)\n\nold\n\n## Held-out test result\n\nT\n"
    out = replace_section(note, "## Finalize", "## Finalize (2)\n\nnew\n")
    assert (
        out == "# study\n\nDescription.\n\n## Finalize (2)\n\nnew\n\n## Held-out test result\n\nT\n"
    )
    added = replace_section("# study\n", "## Held-out test result", "## Held-out test result\n\nX")
    assert added == "# study\n\n## Held-out test result\n\nX\n"
    sub = replace_section(out, "## Held-out test result", "## Held-out test result\n\n### C\n\nY")
    assert sub.endswith("## Finalize (2)\n\nnew\n\n## Held-out test result\n\n### C\n\nY\n")
