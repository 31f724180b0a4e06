from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.search.helpers import train_best_cli, write_config

ALL_FORMATS = "keras,savedmodel,onnx,litert"


def keras_backend() -> str:
    """The Keras backend the CLI runs on here (KERAS_BACKEND, TensorFlow by default)."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


@dataclass(frozen=True)
class TinyStudy:
    root: Path
    data: Path
    config: Path
    storage: str
    name: str
    run_stdout: str
    run_stderr: str


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from data.synth import synthesize

    out = tmp_path_factory.mktemp("tinydata") / "data"
    synthesize(out, per_class=20, size=40, seed=11, test_fraction=0.2)
    return out


@pytest.fixture(scope="session")
def built_tiny_study(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> TinyStudy:
    """A finished 3-trial study, run once through the CLI as a user would. Tests take
    `tiny_study`, a copy of it: what one test writes to its study no other test reads."""
    root = tmp_path_factory.mktemp("tinystudy")
    # No pruner: tests of this study expect every trial to complete.
    config = write_config(root / "tiny.yaml", pruner={"name": "none"})
    storage = f"sqlite:///{root / 'studies.db'}"
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--data",
        str(tiny_data),
        "--storage",
        storage,
        "--study",
        "tiny",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return TinyStudy(root, tiny_data, config, storage, "tiny", result.stdout, result.stderr)


def copy_study(study: TinyStudy, folder: Path) -> TinyStudy:
    """`study` with its SQLite database copied into `folder` (SQLite's backup: consistent
    while the original is open, its write-ahead log included)."""
    import sqlite3

    target = folder / "tiny-study-copy.db"
    source = sqlite3.connect(study.storage.removeprefix("sqlite:///"))
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return dataclasses.replace(study, storage=f"sqlite:///{target}")


@pytest.fixture
def tiny_study(built_tiny_study: TinyStudy, tmp_path: Path) -> TinyStudy:
    """The finished 3-trial study, this test's own copy."""
    return copy_study(built_tiny_study, tmp_path)


@dataclass(frozen=True)
class TrainedBest:
    out: Path
    best: Path
    data: Path
    storage: str  # the copy of the tiny study that train-best recorded its result on
    metrics: dict[str, Any]
    stdout: str


@pytest.fixture(scope="session")
def trained_best(
    built_tiny_study: TinyStudy, tmp_path_factory: pytest.TempPathFactory
) -> TrainedBest:
    """export + train-best (one seed) on a copy of the tiny study, once; on TensorFlow it
    writes every format (tests/search/test_formats.py checks them)."""
    root = tmp_path_factory.mktemp("trainedbest")
    tiny_study = copy_study(built_tiny_study, root)
    best = root / "best.json"
    exported = run_cli(
        "export", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(best)
    )
    assert exported.returncode == 0, exported.stderr
    out = root / "best"
    formats = ALL_FORMATS if keras_backend() == "tensorflow" else "keras"
    result = train_best_cli(
        best, tiny_study.data, out, "--storage", tiny_study.storage, "--format", formats
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    return TrainedBest(out, best, tiny_study.data, tiny_study.storage, metrics, result.stdout)
