"""`tumor-search dashboard`: optuna-dashboard's own server on a storage."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path

from common.progress import log
from search.cli.args import (
    add_artifacts,
    add_storage,
    port,
)
from search.errors import InputError


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot bind --host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise InputError(f"cannot serve on {host}:{port}: {why}") from None


def serve(
    storage_url: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    auth: str | None = None,
    no_auth: bool = False,
    read_only: bool | None = None,
    artifacts: str | None = None,
) -> int:
    """Serve the dashboard until interrupted (binds loopback unless told otherwise).

    Beyond loopback it needs `auth` (an htpasswd-style file) or an explicit `no_auth`, and
    it is read-only unless `read_only` is False (``--allow-edits``).

    Raises:
        InputError: a non-loopback host with neither; a bad auth file; a missing database,
            an unreachable server or a busy port.
    """
    import bottle
    import optuna_dashboard

    from search.cli.dashboard_guard import guard, is_loopback, read_auth_file
    from search.runtime.storage import open_storage, parse_url, resolve_url

    loopback = is_loopback(host)
    if not loopback and auth is None and not no_auth:
        raise InputError(
            f"--host {host} serves the dashboard beyond this machine and optuna-dashboard has "
            "no login of its own: give --auth FILE (user:hash lines, bcrypt or argon2) or "
            "--no-auth to serve it to anyone who can reach the port"
        )
    users = read_auth_file(auth) if auth is not None else None
    if read_only is None:
        read_only = not loopback
    url = resolve_url(storage_url)
    parsed = parse_url(url)
    storage = open_storage(url)  # refuses a missing SQLite file or an unreachable server
    _check_port(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    modes = [m for m, on in (("read-only", read_only), ("login required", users)) if on]
    log(
        f"optuna-dashboard for {parsed.masked} at http://{shown}:{port}/"
        + (f" ({', '.join(modes)})" if modes else "")
        + " (Ctrl-C to stop)"
    )
    store = _artifact_store(storage, url, artifacts)
    app = guard(optuna_dashboard.wsgi(storage, artifact_store=store), users, read_only)
    bottle.run(app, host=host, port=port, quiet=True)
    return 0


def _artifact_store(storage: object, url: str, artifacts: str | None) -> object:
    """The store to show: `artifacts`, else the folder the storage's studies recorded, else
    the storage's default (`search.runtime.artifacts`). Read as it is, never made: the
    dashboard may see it on a read-only mount before any trial has uploaded."""
    import optuna

    from search.runtime.artifacts import default_dir, reader_store, recorded_dir

    if artifacts is not None:
        return reader_store(Path(artifacts).expanduser().resolve())
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        folder = recorded_dir(summary)
        if folder is not None:
            return reader_store(folder)
    return reader_store(default_dir(url))


def cmd_dashboard(args: argparse.Namespace) -> int:
    return serve(
        args.storage, args.host, args.port, args.auth, args.no_auth, args.read_only, args.artifacts
    )


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="serve optuna-dashboard for a storage",
        description="Serve optuna-dashboard on the storage. It binds 127.0.0.1 unless --host "
        "is given; beyond loopback it needs --auth FILE (HTTP basic authentication on every "
        "route) or --no-auth, and is read-only (403 to anything but GET, HEAD and OPTIONS: no "
        "deleting studies, no notes) unless --allow-edits.",
    )
    add_storage(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8080, help="port (default 8080)")
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--auth",
        metavar="FILE",
        help="require a login: FILE holds user:hash lines (bcrypt, as `htpasswd -nB USER` "
        "writes, or argon2); needed beyond loopback unless --no-auth",
    )
    who.add_argument(
        "--no-auth",
        action="store_true",
        help="serve beyond loopback without a login (anyone who reaches the port sees the study)",
    )
    edits = p.add_mutually_exclusive_group()
    edits.add_argument(
        "--read-only",
        dest="read_only",
        action="store_const",
        const=True,
        default=None,
        help="refuse every change (403): the default beyond loopback",
    )
    edits.add_argument(
        "--allow-edits",
        dest="read_only",
        action="store_const",
        const=False,
        help="allow deleting studies, notes and other changes beyond loopback too",
    )
    add_artifacts(p, recorded=False)
    p.set_defaults(handler=cmd_dashboard)
