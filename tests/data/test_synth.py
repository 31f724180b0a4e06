from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.errors import DataError
from data.synth import synthesize
from tests.conftest import run_cli


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_synth_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", per_class=5, size=32, seed=4)
    synthesize(tmp_path / "b", per_class=5, size=32, seed=4)
    synthesize(tmp_path / "c", per_class=5, size=32, seed=5)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_synth_writes_the_kaggle_layout_with_the_test_fraction(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "p", per_class=25, size=32, seed=0, test_fraction=0.2)
    assert (summary.train, summary.test) == (80, 20)
    for cls in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"):
        assert len(list((tmp_path / "p" / "Training" / cls).glob("*.jpg"))) == 20
        assert len(list((tmp_path / "p" / "Testing" / cls).glob("*.jpg"))) == 5


def test_synth_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        synthesize(tmp_path, per_class=2, size=32)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_synth_then_check_reports_four_classes_and_120_images(tmp_path: Path) -> None:
    out = tmp_path / "p"
    synth = run_cli(
        "data", "synth", "--out", str(out), "--per-class", "30", "--size", "64", "--seed", "1"
    )
    assert synth.returncode == 0, synth.stderr
    check = run_cli("data", "check", str(out), "--json")
    assert check.returncode == 0, check.stderr
    summary = json.loads(check.stdout)
    assert summary["images"] == 120 and len(summary["classes"]) == 4
    for key in (
        "layout",
        "classes",
        "images",
        "per_class",
        "splits",
        "unreadable",
        "duplicates",
        "fingerprint",
    ):
        assert key in summary
    assert summary["layout"] == "kaggle_classification"
    assert summary["per_class"] == {"glioma": 30, "meningioma": 30, "no_tumor": 30, "pituitary": 30}
