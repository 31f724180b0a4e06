"""optuna-dashboard as a real server on a free loopback port, read through its JSON API."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import optuna
import pytest

from tests.conftest import assert_bad_input, run_cli, start_cli
from tests.search.conftest import TinyStudy
from tests.search.helpers import (
    dashboard_study,
    free_port,
    get_json,
    serve_dashboard,
    wait_for,
)


def _decode_address(hex_address: str) -> tuple[str, int]:
    """`0100007F:1F90` from /proc/net/tcp{,6} -> ("127.0.0.1", 8080).

    The address is printed as 32-bit words in host byte order, the port as a big number."""
    host, port = hex_address.split(":")
    words = [int(host[i : i + 8], 16) for i in range(0, len(host), 8)]
    packed = b"".join(struct.pack("=I", word) for word in words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port, 16)


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """The local addresses of the TCP sockets that process `pid` listens on, read from
    /proc (its fd links name socket inodes; /proc/net/tcp{,6} map inodes to addresses)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                found.append(_decode_address(local))
    return found


def test_dashboard_serves_the_study_and_its_learning_curves(tiny_study: TinyStudy) -> None:
    with serve_dashboard(tiny_study.storage) as base:
        detail = dashboard_study(base, "tiny")
    study = optuna.load_study(study_name="tiny", storage=tiny_study.storage)
    assert len(detail["trials"]) == len(study.trials) == 3
    for served, stored in zip(
        sorted(detail["trials"], key=lambda t: t["number"]), study.trials, strict=True
    ):
        assert served["state"] == "Complete"
        assert [v["value"] for v in served["intermediate_values"]] == [
            stored.intermediate_values[k] for k in sorted(stored.intermediate_values)
        ]
    assert detail["objective_names"] == ["val_accuracy"]
    assert "Objective" in detail["note"]["body"]


def test_dashboard_refuses_a_missing_database_and_a_busy_port(tmp_path) -> None:
    assert_bad_input(
        run_cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}"), "no study database"
    )
    assert not (tmp_path / "none.db").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = tmp_path / "s.db"
        optuna.create_study(storage=f"sqlite:///{db}")
        assert_bad_input(
            run_cli("dashboard", "--storage", f"sqlite:///{db}", "--port", str(port)), "in use"
        )


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_dashboard_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    """Without --host the dashboard's listening socket is bound to 127.0.0.1 (not 0.0.0.0 or
    ::), as the kernel reports it: the study is not served to the network."""
    db = tmp_path / "s.db"
    optuna.create_study(study_name="bare", storage=f"sqlite:///{db}")
    port = free_port()
    proc = start_cli("dashboard", "--storage", f"sqlite:///{db}", "--port", str(port))
    try:

        def listening() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            return bool(_listening_addresses(proc.pid))

        wait_for(listening, timeout=60, what="the dashboard to listen")
        assert _listening_addresses(proc.pid) == [("127.0.0.1", port)]
        # That socket is the dashboard's (reached on loopback only).
        names = [
            s["study_name"]
            for s in get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        ]
        assert names == ["bare"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
