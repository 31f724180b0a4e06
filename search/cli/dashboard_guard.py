"""What stands between optuna-dashboard and a network beyond loopback.

optuna-dashboard has no login, and its UI deletes studies and edits notes. Two WSGI
middlewares wrap ``optuna_dashboard.wsgi(...)`` (its `run_server` has no hook for one):

* `BasicAuth`: HTTP basic authentication on every route, against an htpasswd-style file
  of ``user:hash`` lines whose hashes are bcrypt (``$2b$``, as ``htpasswd -B`` writes) or
  argon2 (``$argon2id$``); a plaintext password is refused when the file is read.
* `ReadOnly`: 403 to every request whose method is not GET, HEAD or OPTIONS: deleting,
  creating or renaming studies, notes, user attributes, skipping trials, artifact uploads
  and deletes, the schema migration route.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from search.errors import InputError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
BCRYPT_MAX_BYTES = 72

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_auth_file(path: str) -> dict[str, str]:
    """The users and password hashes of an htpasswd-style file.

    Blank lines and lines starting with ``#`` are skipped.

    Raises:
        InputError: the file is missing or unreadable, a line is not ``user:hash``, a user
            repeats, a hash is neither bcrypt nor argon2 (a plaintext password, an MD5 or
            SHA-1 htpasswd hash), or there is no user at all.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--auth {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--auth {path}: cannot read it ({exc})") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise InputError(f"--auth {path}: line {number} is not user:hash")
        if user in users:
            raise InputError(f"--auth {path}: line {number} repeats user {user!r}")
        if not _known_hash(hashed):
            raise InputError(
                f"--auth {path}: line {number}: user {user!r} has no bcrypt or argon2 hash "
                "(a plaintext or weak password); make one with `htpasswd -nB USER` or "
                "`python -c \"import bcrypt; print(bcrypt.hashpw(b'PASSWORD', bcrypt.gensalt()).decode())\"`"
            )
        users[user] = hashed
    if not users:
        raise InputError(f"--auth {path}: no user:hash line")
    return users


def _known_hash(hashed: str) -> bool:
    if hashed.startswith(BCRYPT_PREFIXES):
        return len(hashed) == 60
    return hashed.startswith(ARGON2_PREFIXES) and hashed.count("$") >= 4


def verify_password(hashed: str, password: bytes) -> bool:
    """Whether `password` matches `hashed`; never raises for a bad password (bcrypt refuses
    passwords over 72 bytes, argon2 raises on a mismatch: both are simply False)."""
    try:
        if hashed.startswith(BCRYPT_PREFIXES):
            import bcrypt

            if len(password) > BCRYPT_MAX_BYTES:  # bcrypt < 5 would compare the first 72
                return False
            return bool(bcrypt.checkpw(password, hashed.encode("ascii")))
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error

        try:
            return bool(PasswordHasher().verify(hashed, password))
        except Argon2Error:
            return False
    except (ValueError, TypeError):
        return False


def _reply(
    start_response: StartResponse, status: str, reason: str, headers: list | None = None
) -> list[bytes]:
    body = json.dumps({"reason": reason}).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    return [body]


class ReadOnly:
    """403 to every request that is not GET, HEAD or OPTIONS."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS:
            return self.app(environ, start_response)
        return _reply(
            start_response,
            "403 Forbidden",
            "this dashboard is read-only (tumor-search dashboard --allow-edits lifts it)",
        )


class BasicAuth:
    """HTTP basic authentication on every route against `users` (user -> hash).

    A verified user and password is remembered (by a SHA-256 of both) so that the
    dashboard's polling does not pay bcrypt's cost on every request.
    """

    def __init__(self, app: WSGIApp, users: dict[str, str], realm: str = "tumor-search") -> None:
        self.app, self.users, self.realm = app, users, realm
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def _allowed(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user_bytes, sep, password = decoded.partition(b":")
        user = user_bytes.decode("utf-8", "replace")
        if not sep:
            return False
        if user not in self.users:
            # As long as a known user's check (against one of their hashes, whose result is
            # dropped): response times do not tell which users exist.
            verify_password(next(iter(self.users.values())), password)
            return False
        token = hashlib.sha256(user_bytes + b"\0" + password).digest()
        with self._lock:
            if token in self._verified:
                return True
        if not verify_password(self.users[user], password):
            return False
        with self._lock:
            self._verified.add(token)
        return True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._allowed(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        return _reply(
            start_response,
            "401 Unauthorized",
            "authentication required",
            [("WWW-Authenticate", f'Basic realm="{self.realm}", charset="UTF-8"')],
        )


def guard(app: WSGIApp, users: dict[str, str] | None, read_only: bool) -> WSGIApp:
    """`app` behind read-only and then basic authentication, as asked."""
    if read_only:
        app = ReadOnly(app)
    if users:
        app = BasicAuth(app, users)
    return app
