"""Hospital inputs end to end: a study on a folder of DICOM series and on a folder of NIfTI
volumes, patients kept whole in every split and finalize fold, and `predict` on both."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from search.config import load_config
from search.results.folds import group_ids, make_folds, pool_labels, pool_paths
from search.study_data import prepare
from tests.conftest import run_cli
from tests.data.helpers import write_dicom, write_dicom_dataset, write_nifti_dataset
from tests.search.helpers import train_best_cli, write_config

POOLED = {"split": "pooled", "seed": 2, "val_fraction": 0.25, "test_fraction": 0.25}


def _check_patients_whole(config: Path, data: Path, patient_of) -> None:  # noqa: ANN001
    """No patient in two splits, nor on both sides of any of 3 finalize folds."""
    study_data = prepare(load_config(str(config)), data)
    manifest = study_data.manifest
    splits: dict[str, set[str]] = defaultdict(set)
    for entry in manifest.entries:
        splits[patient_of(entry.path)].add(entry.split)
    assert splits and all(len(s) == 1 for s in splits.values()), splits
    assert manifest.group_summary()["spanning_splits"] == 0
    paths = pool_paths(manifest)
    for fold in make_folds(pool_labels(manifest), group_ids(paths, manifest.kept_together), 3, 0):
        held = {patient_of(paths[i]) for i in fold.held_out}
        assert not held & {patient_of(paths[i]) for i in fold.train}


def _study(tmp_path: Path, data: Path, **data_settings: object) -> tuple[str, Path]:
    config = write_config(
        tmp_path / "c.yaml",
        trials=2,
        pruner={"name": "none"},
        data={**POOLED, "image_size": 32, **data_settings},
    )
    storage = f"sqlite:///{tmp_path / 'h.db'}"
    result = run_cli("run", "--config", str(config), "--data", str(data), "--storage", storage)
    assert result.returncode == 0, result.stderr
    return storage, config


def _train_best(tmp_path: Path, storage: str, data: Path) -> Path:
    best = tmp_path / "best.json"
    exported = run_cli("export", "--study", "tiny", "--storage", storage, "--out", str(best))
    assert exported.returncode == 0, exported.stderr
    out = tmp_path / "best"
    trained = train_best_cli(best, data, out, "--storage", storage, "--no-refit")
    assert trained.returncode == 0, trained.stderr
    return out / "model.keras"


@pytest.mark.slow  # two short trials, a train-best and predict on DICOM series
def test_a_study_on_dicom_series(tmp_path: Path) -> None:
    data = tmp_path / "dicom"
    owner = write_dicom_dataset(data, patients_per_class=4, slices=3, size=32)
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("test-SR.dcm"), data / "glioma_tumor" / "report.dcm")
    checked = run_cli("data", "check", str(data), "--split", "pooled", "--json")
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)
    assert summary["images"] == len(owner) == 48
    groups = summary["groups"]
    assert (groups["count"], groups["largest"], groups["spanning_splits"]) == (16, 3, 0)
    assert sum(groups["per_split"].values()) == 16 and min(groups["per_split"].values()) > 0
    assert summary["skipped"] == [
        {"path": "glioma_tumor/report.dcm", "reason": "no pixel data (Comprehensive SR Storage)"}
    ]
    storage, config = _study(tmp_path, data)
    _check_patients_whole(config, data, lambda path: owner[path])
    model = _train_best(tmp_path, storage, data)
    series = data / "meningioma_tumor" / "PAT100"
    predicted = run_cli("predict", "--model", str(model), str(series), "--json")
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert sorted(Path(r["path"]).name for r in rows) == ["IM0.dcm", "IM1.dcm", "IM2.dcm"]
    report = run_cli("predict", "--model", str(model), str(data / "glioma_tumor" / "report.dcm"))
    assert report.returncode == 2 and "no pixel data" in report.stderr


@pytest.mark.slow  # two short trials, a train-best and predict on NIfTI volumes
def test_a_study_on_nifti_volumes(tmp_path: Path) -> None:
    data = tmp_path / "nifti"
    write_nifti_dataset(data, volumes_per_class=4, depth=3, size=32)
    checked = run_cli("data", "check", str(data), "--split", "pooled", "--json")
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)
    assert summary["images"] == 4 * 4 * 3  # the empty first and last slices are skipped
    groups = summary["groups"]
    assert (groups["count"], groups["largest"], groups["spanning_splits"]) == (16, 3, 0)
    assert sum(groups["per_split"].values()) == 16 and min(groups["per_split"].values()) > 0
    storage, config = _study(tmp_path, data, volume_range=[0.0, 1.0])
    _check_patients_whole(config, data, lambda path: path.partition("#")[0])
    model = _train_best(tmp_path, storage, data)
    volume = data / "pituitary_tumor" / "vol0.nii.gz"
    predicted = run_cli("predict", "--model", str(model), str(volume), "--json")
    assert predicted.returncode == 0, predicted.stderr
    keys = [row["path"].rpartition("#")[2] for row in json.loads(predicted.stdout)]
    assert keys == ["axial=2", "axial=3", "axial=4"]


def test_blank_or_shared_patient_ids_are_a_warning(tmp_path: Path) -> None:
    import numpy as np

    from data.discovery import scan
    from data.groups import group_warnings

    rng = np.random.default_rng(0)
    for k in range(4):
        for folder in ("glioma", "no_tumor"):
            values = rng.integers(0, 4096, size=(16, 16), dtype=np.uint16)
            write_dicom(tmp_path / "same" / folder / f"{k}.dcm", values, "ANON")
            write_dicom(tmp_path / "blank" / folder / f"{k}.dcm", values, "", study="")
    [line] = group_warnings(scan(tmp_path / "same"))
    assert "all 8 DICOM files have PatientID 'ANON'" in line
    one_patient = run_cli("data", "check", str(tmp_path / "same"))
    assert one_patient.returncode == 2 and "1 patient group" in one_patient.stderr
    blank = run_cli("data", "check", str(tmp_path / "blank"))
    assert blank.returncode == 0, blank.stderr
    assert "8 of 8 DICOM files have no PatientID" in blank.stdout
