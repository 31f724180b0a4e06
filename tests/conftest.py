"""Fixtures shared by every test package: phantom datasets, an isolated cache, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test session gets its own cache and Keras home; the user's are never touched."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TUMOR_SEARCH_CACHE", str(base / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(base / "keras-home"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("TUMOR_SEARCH_STORAGE", raising=False)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> CliResult:
    """Run `python -m search ARGS` in a fresh process, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_bad_input(result: CliResult, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr, no traceback, and the line says what is wrong."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), line


PG_ENV = "TUMOR_SEARCH_TEST_POSTGRES"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL test database from $TUMOR_SEARCH_TEST_POSTGRES (.ci/run sets it).

    Unset: the test is skipped. Set but unreachable: the test fails.
    """
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set")
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        pytest.fail(f"{PG_ENV} is set but the server cannot be reached: {exc}")
    finally:
        engine.dispose()
    return url


def start_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start `python -m search ARGS` in the background (stdout and stderr captured)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "search", *args],
        cwd=cwd or ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom dataset in the Kaggle layout (16 images per class, 48 px)."""
    from data.synth import synthesize

    out = tmp_path_factory.mktemp("phantom") / "kaggle"
    synthesize(out, per_class=16, size=48, seed=3, test_fraction=0.25)
    return out
