"""`tumor-search dashboard`: optuna-dashboard's own server on a storage."""

from __future__ import annotations

import errno
import socket

from data.progress import log
from search.errors import InputError
from search.storage import open_storage, parse_url, resolve_url


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

    url = resolve_url(storage_url)
    parsed = parse_url(url)
    storage = open_storage(url)  # refuses a missing SQLite file or an unreachable server
    _check_port(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log(f"optuna-dashboard for {parsed.masked} at http://{shown}:{port}/ (Ctrl-C to stop)")
    optuna_dashboard.run_server(storage, host=host, port=port)
    return 0
