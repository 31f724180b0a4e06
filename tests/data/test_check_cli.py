from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_bad_input, run_cli
from tests.data.helpers import make_classes, truncated_jpeg


def test_check_text_output_lists_counts_and_fingerprint(phantom_dir: Path) -> None:
    result = run_cli("data", "check", str(phantom_dir))
    assert result.returncode == 0, result.stderr
    assert "kaggle_classification" in result.stdout
    assert "fingerprint:" in result.stdout and "glioma" in result.stdout


def test_check_json_reports_unreadable_and_duplicates(tmp_path: Path) -> None:
    make_classes(tmp_path, ["a", "b"], 3)
    truncated_jpeg(tmp_path / "a" / "broken.jpg", seed=3)
    (tmp_path / "b" / "copy.jpg").write_bytes((tmp_path / "b" / "img0.jpg").read_bytes())
    result = run_cli("data", "check", str(tmp_path), "--json", "--split", "pooled")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["unreadable"] == ["a/broken.jpg"]
    assert summary["duplicates"] == [["b/copy.jpg", "b/img0.jpg"]]
    assert summary["layout"] == "flat" and summary["images"] == 7


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("missing", "not found"),
        ("empty", "no class folders"),
        ("single", "at least 2 classes"),
        ("unreadable_class", "no readable image"),
    ],
)
def test_check_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, setup: str, fragment: str
) -> None:
    root = tmp_path / "data"
    if setup != "missing":
        root.mkdir()
    if setup == "single":
        make_classes(root, ["glioma"], 2)
    if setup == "unreadable_class":
        make_classes(root, ["glioma", "pituitary"], 2)
        (root / "meningioma").mkdir()
        (root / "meningioma" / "zero.jpg").write_bytes(b"")
    assert_bad_input(run_cli("data", "check", str(root)), fragment)


def test_check_official_on_flat_layout_is_bad_input(tmp_path: Path) -> None:
    make_classes(tmp_path, ["a", "b"], 2)
    assert_bad_input(run_cli("data", "check", str(tmp_path), "--split", "official"), "pooled")


def _leaky_copy(phantom_dir: Path, tmp_path: Path) -> Path:
    """The phantom set with two Testing images that copy Training images."""
    import shutil

    root = tmp_path / "leaky"
    shutil.copytree(phantom_dir, root)
    for i, name in enumerate(sorted((root / "Training" / "meningioma_tumor").iterdir())[:2]):
        target = root / "Testing" / "meningioma_tumor" / f"again{i}.jpg"
        target.write_bytes(name.read_bytes())
    return root


def test_check_lists_test_copies_of_training_images_and_leaves_them_out(
    phantom_dir: Path, tmp_path: Path
) -> None:
    root = _leaky_copy(phantom_dir, tmp_path)
    text = run_cli("data", "check", str(root))
    assert text.returncode == 0, text.stderr
    assert "dropped:     2 test images copying a training image" in text.stdout
    assert "Testing/meningioma_tumor/again0.jpg = Training/meningioma_tumor/" in text.stdout
    assert "(exact)" in text.stdout and "train-test: 2 groups" in text.stdout
    summary = json.loads(run_cli("data", "check", str(root), "--json").stdout)
    assert [d["path"] for d in summary["dropped_test_duplicates"]] == [
        "Testing/meningioma_tumor/again0.jpg",
        "Testing/meningioma_tumor/again1.jpg",
    ]
    # The official test split holds the 4 Testing images per class, not the 2 copies.
    assert summary["splits"]["test"]["meningioma"] == 4
    assert summary["cross_split_duplicates"] == []


def test_check_with_a_config_prints_the_fingerprint_a_study_records(
    phantom_dir: Path, tmp_path: Path
) -> None:
    """`data check --config` gives exactly the study's fingerprint (a pooled config here,
    whose split differs from data check's default)."""
    import optuna

    from tests.search.helpers import create_cli, write_config

    root = _leaky_copy(phantom_dir, tmp_path)
    config = write_config(tmp_path / "c.yaml", data={"split": "pooled", "seed": 7})
    storage = f"sqlite:///{tmp_path / 's.db'}"
    created = create_cli("fp", config, root, storage)
    assert created.returncode == 0, created.stderr
    recorded = optuna.load_study(study_name="fp", storage=storage).user_attrs["data_fingerprint"]
    checked = json.loads(
        run_cli("data", "check", str(root), "--config", str(config), "--json").stdout
    )
    assert checked["fingerprint"] == recorded
    assert checked["split_policy"]["policy"] == "pooled"
    plain = run_cli("data", "check", str(root))
    assert recorded not in plain.stdout and "check it with --config" in plain.stdout


def test_check_refuses_split_flags_beside_a_config(phantom_dir: Path) -> None:
    assert_bad_input(
        run_cli("data", "check", str(phantom_dir), "--config", "demo", "--seed", "3"),
        "--seed cannot be combined with --config",
    )
