"""The duplicate policy in studies: test copies of training images dropped, counted and
warned about; studies made before the policy was recorded keep their old split."""

from __future__ import annotations

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
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "3 test images" in warnings[0], result.stderr
    attrs = optuna.load_study(study_name="d", storage=storage).user_attrs
    assert attrs["test_duplicates_dropped"] == 3
    assert attrs["config"]["data"]["dedup"] == "exact"
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
    assert "1 completed" in worker.stderr or "1 pruned" in worker.stderr
