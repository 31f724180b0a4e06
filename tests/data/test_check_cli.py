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
