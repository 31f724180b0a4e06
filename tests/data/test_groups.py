"""Patient groups (`data.groups`, `data.group_pattern`): no patient spans two splits or two
finalize folds, copies across patients join them, and a bad groups file or pattern exits 2
with one line."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from data.discovery import scan
from data.errors import DataError
from data.groups import dataset_groups
from data.split import SplitPolicy, make_manifest
from search.results.folds import group_ids, make_folds, pool_labels, pool_paths
from tests.conftest import assert_bad_input, run_cli

PATIENTS = 9


@pytest.fixture(scope="module")
def patient_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantoms renamed `P<k>_slice<i>.jpg`, patient k = image number mod PATIENTS (so every
    patient has slices in both Training/ and Testing/ and several classes), and
    `groups.csv` holding the same patients."""
    from data.synth import synthesize

    source = tmp_path_factory.mktemp("phantoms") / "raw"
    synthesize(source, per_class=24, size=32, seed=7, test_fraction=0.25)
    out = tmp_path_factory.mktemp("patients") / "mri"
    rows = []
    for number, path in enumerate(sorted(p for p in source.rglob("*.jpg"))):
        rel = path.relative_to(source)
        target = out / rel.parent / f"P{number % PATIENTS}_slice{number}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        rows.append((target.relative_to(out).as_posix(), f"patient-{number % PATIENTS}"))
    with (out / "groups.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "group"), *rows])
    return out


def _patients_by_split(manifest) -> dict[str, set[str]]:  # noqa: ANN001
    """Each patient (as the file name says, not as the manifest does) -> its splits."""
    splits: dict[str, set[str]] = defaultdict(set)
    for entry in manifest.entries:
        splits[Path(entry.path).name.split("_")[0]].add(entry.split)
    return splits


SOURCES = {"csv": ("groups.csv", None), "pattern": (None, r"/(P\d+)_slice")}


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("policy", ["official", "pooled"])
@pytest.mark.parametrize("dedup", ["near", "exact", "off"])
def test_no_patient_spans_splits_or_folds(
    patient_data: Path, source: str, policy: str, dedup: str
) -> None:
    dataset = scan(patient_data)
    groups = dataset_groups(dataset, *SOURCES[source])
    assert len(set(groups.values())) == PATIENTS
    manifest = make_manifest(dataset, SplitPolicy(policy, 0.2, 0.25, seed=1, dedup=dedup), groups)
    by_split = _patients_by_split(manifest)
    assert all(len(splits) == 1 for splits in by_split.values()), by_split
    assert manifest.group_summary()["spanning_splits"] == 0
    if policy == "official":  # every patient has Training slices: its Testing ones go
        assert not manifest.split("test")
        assert {d.kind for d in manifest.dropped} == {"patient"}
    paths = pool_paths(manifest)
    ids = group_ids(paths, manifest.kept_together)
    folds = make_folds(pool_labels(manifest), ids, 2, seed=0)
    for fold in folds:
        held = {Path(paths[i]).name.split("_")[0] for i in fold.held_out}
        trained = {Path(paths[i]).name.split("_")[0] for i in fold.train}
        assert not held & trained, (held, trained)


def test_without_groups_the_split_and_fingerprint_are_unchanged(patient_data: Path) -> None:
    dataset = scan(patient_data)
    policy = SplitPolicy("pooled", 0.2, 0.25, seed=1)
    plain, empty = make_manifest(dataset, policy), make_manifest(dataset, policy, {})
    assert plain.fingerprint == empty.fingerprint and plain.entries == empty.entries
    assert plain.kept_together == plain.duplicates
    grouped = make_manifest(dataset, policy, dataset_groups(dataset, "groups.csv"))
    assert grouped.fingerprint != plain.fingerprint  # a worker without the groups refuses


def test_a_copy_across_two_patients_joins_them(tmp_path: Path, patient_data: Path) -> None:
    """P0's slice copied as a slice of P1: the two patients become one group."""
    data = tmp_path / "mri"
    shutil.copytree(patient_data, data)
    train = data / "Training"
    p0 = next(train.rglob("P0_*.jpg"))
    p1 = next(train.rglob("P1_*.jpg"))
    shutil.copyfile(p0, p1.with_name("P1_copy.jpg"))
    dataset = scan(data)
    groups = dataset_groups(dataset, None, r"/(P\d+)_")
    for seed in range(4):
        manifest = make_manifest(dataset, SplitPolicy("pooled", 0.3, 0.3, seed=seed), groups)
        by_split = _patients_by_split(manifest)
        assert by_split["P0"] == by_split["P1"], (seed, by_split)
        assert any({"P0", "P1"} <= {Path(p).name[:2] for p in g} for g in manifest.together)


def test_data_check_reports_groups(patient_data: Path) -> None:
    result = run_cli("data", "check", str(patient_data), "--groups", "groups.csv", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    largest = max(np.bincount([int(Path(e).name[1]) for e in _image_paths(patient_data)]))
    groups = summary["groups"]
    assert groups | {"per_split": None} == {
        "count": PATIENTS,
        "largest": int(largest),
        "spanning_splits": 0,
        "per_split": None,
    }
    assert sum(groups["per_split"].values()) == PATIENTS  # each patient in one split
    text = run_cli("data", "check", str(patient_data), "--group-pattern", r"/(P\d+)_")
    assert text.returncode == 0, text.stderr
    assert f"groups:      {PATIENTS} patient groups" in text.stdout
    plain = json.loads(run_cli("data", "check", str(patient_data), "--json").stdout)
    assert plain["groups"]["count"] == plain["groups"]["largest"] == 0


def _image_paths(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*.jpg"))]


def test_bad_groups_exit_2_with_one_line(tmp_path: Path, patient_data: Path) -> None:
    images = _image_paths(patient_data)
    files = {
        "no-group-column.csv": "path,patient\nx,1\n",
        "empty-group.csv": f"path,group\n{images[0]},\n",
        "two-groups.csv": f"path,group\n{images[0]},a\n{images[0]},b\n",
        "orphan-rows.csv": "path,group\n"
        + "".join(f"{p},a\n" for p in images)
        + "Training/glioma_tumor/gone.jpg,a\n",
        "missing-images.csv": "path,group\n" + "".join(f"{p},a\n" for p in images[:-2]),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cases = {
        "missing.csv": ("groups file not found",),
        "no-group-column.csv": ("has no 'group' column",),
        "empty-group.csv": ("line 2: an empty path or group",),
        "two-groups.csv": ("line 3", "in group 'a' and 'b'"),
        "orphan-rows.csv": ("1 row(s) name no image", "gone.jpg"),
        "missing-images.csv": (f"2 of {len(images)} images have no group", images[-1]),
    }
    for name, fragments in cases.items():
        result = run_cli("data", "check", str(patient_data), "--groups", str(tmp_path / name))
        assert_bad_input(result, *fragments)
    no_capture = run_cli("data", "check", str(patient_data), "--group-pattern", r"P\d+")
    assert_bad_input(no_capture, "has no capture group")
    unmatched = run_cli("data", "check", str(patient_data), "--group-pattern", r"/(Q\d+)_")
    assert_bad_input(unmatched, f"{len(images)} of {len(images)} images have no group")
    with pytest.raises(DataError, match="not both"):
        dataset_groups(scan(patient_data), "groups.csv", r"/(P\d+)_")


def test_the_config_takes_one_kind_of_group() -> None:
    from search.config import StudyConfig, load_config
    from search.errors import ConfigError

    raw = load_config("demo").to_dict()
    both = raw | {"data": raw["data"] | {"groups": "g.csv", "group_pattern": "(P)"}}
    with pytest.raises(ConfigError, match="not both"):
        StudyConfig.from_dict(both)
    bad = raw | {"data": raw["data"] | {"group_pattern": "(unclosed"}}
    with pytest.raises(ConfigError, match=r"data.group_pattern: .*not a regex"):
        StudyConfig.from_dict(bad)
    good = StudyConfig.from_dict(raw | {"data": raw["data"] | {"group_pattern": r"/(P\d+)_"}})
    assert good.data.group_pattern == r"/(P\d+)_"
