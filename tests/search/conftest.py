from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.search.helpers import write_config


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
def tiny_study(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> TinyStudy:
    """A finished 3-trial study, run once through the CLI as a user would."""
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
