"""The duplicate policy in studies: test copies of training images dropped, counted and
warned about; studies made before the policy was recorded keep their old split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna

from tests.conftest import run_cli
from tests.search.helpers import create_cli, write_config


def _leaky(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "leaky"
    shutil.copytree(tiny_data, root)
    for i, image in enumerate(sorted((root / "Training" / "pituitary_tumor").iterdir())[:3]):
        (root / "Testing" / "pituitary_tumor" / f"dup{i}.jpg").write_bytes(image.read_bytes())
    return root


def test_study_create_warns_and_records_the_dropped_test_copies(
    tmp_path: Path, tiny_data: Path
) -> None:
    root = _leaky(tiny_data, tmp_path)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = write_config(tmp_path / "c.yaml")
    result = create_cli("d", config, root, storage)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("warning:") and "test image" in line]
    assert len(warnings) == 1 and "3 test images" in warnings[0], result.stderr
    attrs = optuna.load_study(study_name="d", storage=storage).user_attrs
    assert attrs["test_duplicates_dropped"] == 3
    assert attrs["config"]["data"]["dedup"] == "near"
    assert attrs["data_counts"]["test"] == len(list((tiny_data / "Testing").rglob("*.jpg")))


def test_a_study_stored_without_a_duplicate_policy_keeps_its_fingerprint(
    tmp_path: Path, tiny_data: Path
) -> None:
    """A study made before the policy was recorded (its config has no data.dedup) split with
    test copies kept; its workers must still match its fingerprint."""
    root = _leaky(tiny_data, tmp_path)
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    config = write_config(
        tmp_path / "c.yaml",
        trials=1,
        training={"epochs": 1},
        data={"dedup": "exact-train-val"},
    )
    created = create_cli("old", config, root, storage)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="old", storage=storage)
    stored = study.user_attrs["config"]
    del stored["data"]["dedup"]  # as the older version wrote it
    study.set_user_attr("config", stored)
    worker = run_cli("worker", "--study", "old", "--storage", storage, "--data", str(root))
    assert worker.returncode == 0, worker.stderr
    # The only trial cannot be pruned (no trial before it to compare with): it completes.
    assert "worker done: 1 completed, 0 pruned, 0 failed" in worker.stderr, worker.stderr
    (trial,) = optuna.load_study(study_name="old", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE


def test_a_stored_exact_policy_without_a_near_threshold_keeps_its_fingerprint(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Studies made with ``dedup: exact`` before near duplicates were found stored no
    near_threshold: their config still loads and the data still matches its fingerprint."""
    from search.runtime.study import study_config
    from search.study_data import prepare

    root = _leaky(tiny_data, tmp_path)
    storage = f"sqlite:///{tmp_path / 'exact.db'}"
    config = write_config(tmp_path / "c.yaml", data={"dedup": "exact"})
    created = create_cli("exact", config, root, storage)
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="exact", storage=storage)
    stored = study.user_attrs["config"]
    del stored["data"]["near_threshold"]  # as the older version wrote it
    study.set_user_attr("config", stored)
    loaded = study_config(optuna.load_study(study_name="exact", storage=storage))
    assert loaded.data.dedup == "exact"
    assert prepare(loaded, root).fingerprint == study.user_attrs["data_fingerprint"]


def test_the_warning_says_when_near_copies_are_over_5_percent_of_the_test_split(
    tmp_path: Path, tiny_data: Path
) -> None:
    from PIL import Image

    from data.discovery import scan
    from data.split import SplitPolicy, make_manifest
    from search.study_data import StudyData

    def warning(root: Path) -> str:
        data = StudyData(root, make_manifest(scan(root), SplitPolicy()))
        return data.dropped_warning() or ""

    root = _leaky(tiny_data, tmp_path)  # 3 exact copies only
    assert "3 test images" in warning(root) and "near copies" not in warning(root)
    for i, image in enumerate(sorted((root / "Training" / "glioma_tumor").iterdir())[:2]):
        with Image.open(image) as img:  # re-encoded: 2 near copies of 16 + 5 test images
            img.save(root / "Testing" / "glioma_tumor" / f"near{i}.jpg", quality=70)
    text = warning(root)
    assert "5 test images" in text and "near copies are 10% of the test split" in text, text


def test_classes_left_thin_in_the_test_split_are_warned_about_once_each(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Copies of training images dropped from the test split can leave a class with few
    test images (real MRI: no_tumor fell from 405 to 35); data check and study create say
    so, one line per class, and recommend the pooled split."""
    root = tmp_path / "thin"
    shutil.copytree(tiny_data, root)
    training = sorted((root / "Training" / "no_tumor").iterdir())
    for i, image in enumerate(training[:10]):  # no_tumor: 4 kept of 14 (under half)
        (root / "Testing" / "no_tumor" / f"dup{i}.jpg").write_bytes(image.read_bytes())
    for image in sorted((root / "Testing" / "glioma_tumor").iterdir())[1:]:
        image.unlink()  # glioma: 1 of 13 test images (7.7 %) against 25 % of training
    expected = {"no_tumor": "keeps 4 of its 14 images", "glioma": "keeps 1 of its 1 images"}

    def thin(lines: list[str]) -> dict[str, str]:
        found = {}
        for line in lines:
            if "warning:" in line and " test class " in line:
                name = line.split(" test class ", 1)[1].split()[0]
                assert "split: pooled" in line, line
                found[name] = line
        return found

    check = run_cli("data", "check", str(root))
    assert check.returncode == 0, check.stderr
    found = thin(check.stdout.splitlines())
    assert set(found) == set(expected), check.stdout
    assert all(expected[c] in found[c] for c in expected), found
    assert "7.7% of the test split against 25.0% of training" in found["glioma"]

    storage = f"sqlite:///{tmp_path / 's.db'}"
    created = create_cli("thin", write_config(tmp_path / "c.yaml"), root, storage)
    assert created.returncode == 0, created.stderr
    assert set(thin(created.stderr.splitlines())) == set(expected), created.stderr

    balanced = run_cli("data", "check", str(tiny_data), "--json")
    assert json.loads(balanced.stdout)["test_balance_warnings"] == []
