"""A PostgreSQL server that a test owns, so that it can stop and start it.

`initdb` into a temporary folder and `pg_ctl` on a free loopback port, both as the
``postgres`` user (`runuser -u postgres`: initdb refuses root). Where that cannot be done
(no PostgreSQL binaries, not root) the test is skipped, except when
$TUMOR_SEARCH_TEST_POSTGRES is set (CI), where it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import PG_ENV


def _unavailable(reason: str) -> None:
    if os.environ.get(PG_ENV):
        pytest.fail(f"{PG_ENV} is set, but a test-owned PostgreSQL cannot run: {reason}")
    pytest.skip(f"a test-owned PostgreSQL cannot run here: {reason}")


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        _unavailable("no initdb (install PostgreSQL's server package)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnedPostgres:
    """One PostgreSQL cluster in a temporary folder; `stop()` and `start()` at will."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            _unavailable("it needs root and runuser to run initdb as the postgres user")
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="owned-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self._ready = False  # until the first start, a failure means "cannot run here"
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()
        self._ready = True

    def _as_postgres(self, tool: str, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            message = f"{tool} failed: {(result.stderr or result.stdout).strip()[-500:]}"
            if self._ready:
                pytest.fail(message)
            _unavailable(message)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        log = str(self.root / "server.log")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
