"""The dashboard beyond loopback: a login (HTTP basic auth from an htpasswd-style file) or an
explicit --no-auth, and read-only unless edits are allowed; tested on a real server."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import optuna
import pytest

from tests.conftest import assert_bad_input, run_cli
from tests.search.helpers import http_status, serve_dashboard

PASSWORD = "correct horse"
LONG = "a" * 72  # bcrypt's longest password


@pytest.fixture
def study(tmp_path: Path) -> tuple[str, int]:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    created = optuna.create_study(study_name="guarded", storage=storage)
    return storage, created._study_id


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    long = bcrypt.hashpw(LONG.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"# dashboard users\nreader:{hashed}\nlong:{long}\n")
    return path


def test_beyond_loopback_needs_a_login_or_no_auth_said_aloud(
    study: tuple[str, int], tmp_path: Path
) -> None:
    storage, _ = study
    result = run_cli("dashboard", "--storage", storage, "--host", "0.0.0.0")
    assert_bad_input(result, "--auth FILE", "--no-auth")
    bad = {
        "missing": (None, "no such file"),
        "malformed": ("just-a-name\n", "line 1 is not user:hash"),
        "plaintext": ("reader:hunter2\n", "line 1: user 'reader' has no bcrypt or argon2 hash"),
        "empty": ("# nobody\n", "no user:hash line"),
    }
    for name, (content, fragment) in bad.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        result = run_cli(
            "dashboard", "--storage", storage, "--host", "0.0.0.0", "--auth", str(path)
        )
        assert_bad_input(result, fragment)


def test_no_page_or_api_answers_without_the_right_login(
    study: tuple[str, int], auth_file: Path
) -> None:
    storage, study_id = study
    with serve_dashboard(storage, "--host", "0.0.0.0", "--auth", str(auth_file)) as base:
        for path in ("/", "/dashboard", "/api/studies", f"/api/studies/{study_id}"):
            assert http_status(base + path) == 401
            assert http_status(base + path, user="reader", password="wrong") == 401
            assert http_status(base + path, user="nobody", password=PASSWORD) == 401
        assert http_status(f"{base}/api/studies", user="reader", password="x" * 100) == 401
        # bcrypt reads 72 bytes: more is refused, not compared by its first 72
        assert http_status(f"{base}/api/studies", user="long", password=LONG + "more") == 401
        assert http_status(f"{base}/api/studies", user="long", password=LONG) == 200
        assert http_status(f"{base}/api/studies", user="reader", password=PASSWORD) == 200
        # Beyond loopback it is read-only by default: the study stays.
        status = http_status(
            f"{base}/api/studies/{study_id}", "DELETE", user="reader", password=PASSWORD
        )
        assert status == 403
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["guarded"]


def test_read_only_refuses_changes_and_allow_edits_lifts_it(study: tuple[str, int]) -> None:
    storage, study_id = study
    with serve_dashboard(storage, "--read-only") as base:  # on loopback, asked for
        assert http_status(f"{base}/api/studies") == 200
        assert http_status(f"{base}/api/studies/{study_id}", "DELETE") == 403
        assert http_status(f"{base}/api/studies", "POST") == 403
    assert len(optuna.get_all_study_summaries(storage)) == 1
    with serve_dashboard(storage, "--host", "0.0.0.0", "--no-auth", "--allow-edits") as base:
        assert http_status(f"{base}/api/studies/{study_id}", "DELETE") in (200, 204)
    assert optuna.get_all_study_summaries(storage) == []


def test_passwords_are_checked_whole_whatever_bcrypt_version() -> None:
    from search.cli.dashboard_guard import verify_password

    hashed = bcrypt.hashpw(LONG.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert verify_password(hashed, LONG.encode())
    assert not verify_password(hashed, (LONG + "b").encode())  # bcrypt 4 would say yes
    assert not verify_password(hashed, b"")
    from argon2 import PasswordHasher

    argon = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password(argon, b"pw") and not verify_password(argon, b"pw2")
