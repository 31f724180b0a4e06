"""Fixtures shared by every test package: phantom datasets, an isolated cache, the CLI."""

from __future__ import annotations

import contextlib
import io
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


# Variables that a process reads once, at import: a command run with one of them set needs
# a fresh process (KERAS_BACKEND picks Keras' backend when Keras is first imported).
_READ_AT_IMPORT = ("KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL")


def searching_only(args: tuple[str, ...]) -> tuple[str, ...]:
    """`run` without its closing finalize unless a test asks for it with `--finalize` (a
    flag only the tests know: it is dropped here). Finalize's cross-validation would add
    several fits to every test that runs a study; tests/search/test_run_finalize.py covers it.
    """
    if not args or args[0] != "run":
        return args
    if "--finalize" in args:
        return tuple(a for a in args if a != "--finalize")
    return args if "--no-finalize" in args else (*args, "--no-finalize")


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    process: bool = False,
) -> CliResult:
    """Run `tumor-search ARGS` and capture its exit code, stdout and stderr.

    In this process by default, through the same entry point (`search.cli.main`), which saves
    a TensorFlow import per call. `process=True` (and any `env` that a process reads only at
    import) runs `python -m search ARGS` in a fresh process instead: for what only a process
    shows (signals, a real exit, what the environment sets at import).
    """
    args = searching_only(args)
    if process or any(name in (env or {}) for name in _READ_AT_IMPORT):
        return _run_process(args, cwd, env, timeout)
    return _run_in_process(args, cwd, env)


def _run_process(
    args: tuple[str, ...], cwd: Path | None, env: dict[str, str] | None, timeout: float
) -> CliResult:
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


class _Captured(io.StringIO):
    """A text stream a command writes to as to a pipe (no terminal, no file descriptor)."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


def _run_in_process(
    args: tuple[str, ...], cwd: Path | None, env: dict[str, str] | None
) -> CliResult:
    """`search.cli.main(args)` here, as a process would run it: its own working directory,
    environment, signal handlers and streams, all restored afterwards; an uncaught exception
    is a traceback on stderr and exit 1, as the interpreter does."""
    import gc
    import signal
    import traceback

    import common.progress
    from search.cli import main

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_quiet = common.progress.is_quiet()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_argv = sys.argv
    out, err = _Captured(), _Captured()
    os.environ.update(env or {})
    os.chdir(cwd or ROOT)
    sys.argv = ["tumor-search", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - what the interpreter prints for a bug
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        common.progress.set_quiet(saved_quiet)
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        gc.unfreeze()  # a worker freezes what it holds for its whole life; here that ends
        _clear_keras_session()
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())


def _clear_keras_session() -> None:
    """Free the models a command built, as a process would by exiting."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


def assert_bad_input(result: CliResult, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr, no traceback, and the line says what is wrong."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), line


PG_ENV = "TUMOR_SEARCH_TEST_POSTGRES"


def _database_url(env: str) -> str:
    """The test database URL in `env`: unset, the test is skipped; set but unreachable, the
    test fails."""
    url = os.environ.get(env)
    if not url:
        pytest.skip(f"{env} is not set")
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        pytest.fail(f"{env} is set but the server cannot be reached: {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL test database from $TUMOR_SEARCH_TEST_POSTGRES (.ci/run sets it)."""
    return _database_url(PG_ENV)


MYSQL_ENV = "TUMOR_SEARCH_TEST_MYSQL"


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MariaDB (MySQL) test database from $TUMOR_SEARCH_TEST_MYSQL (.ci/run sets it)."""
    return _database_url(MYSQL_ENV)


def start_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start `python -m search ARGS` in the background (stdout and stderr captured)."""
    args = searching_only(args)
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
