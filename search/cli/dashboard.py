"""`tumor-search dashboard`: optuna-dashboard's own server on a storage."""

from __future__ import annotations

import argparse
import errno
import socket

from common.progress import log
from search.cli.args import (
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


def serve(storage_url: str | None, host: str = "127.0.0.1", port: int = 8080) -> int:
    """Serve the dashboard until interrupted (binds loopback unless told otherwise)."""
    import optuna_dashboard

    from search.runtime.storage import open_storage, parse_url, resolve_url

    url = resolve_url(storage_url)
    parsed = parse_url(url)
    storage = open_storage(url)  # refuses a missing SQLite file or an unreachable server
    _check_port(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log(f"optuna-dashboard for {parsed.masked} at http://{shown}:{port}/ (Ctrl-C to stop)")
    optuna_dashboard.run_server(storage, host=host, port=port)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    return serve(args.storage, args.host, args.port)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="serve optuna-dashboard for a storage",
        description="Serve optuna-dashboard on the storage (binds 127.0.0.1 unless --host is given).",
    )
    add_storage(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8080, help="port (default 8080)")
    p.set_defaults(handler=cmd_dashboard)
