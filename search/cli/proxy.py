"""`tumor-search storage-proxy`: one process that holds the database connections of many
workers (Optuna's gRPC storage proxy; see `search.runtime.proxy_server`)."""

from __future__ import annotations

import argparse

from search.cli.args import add_storage, port


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    from search.runtime.proxy_server import serve
    from search.runtime.storage import resolve_url

    serve(resolve_url(args.storage), args.host, args.port)
    return 0  # stopped by SIGINT (Ctrl-C) or SIGTERM, as it is meant to stop


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "storage-proxy",
        parents=[common],
        help="serve a database to many workers through one gRPC proxy",
        description="Serve the study database to workers started with --storage "
        "grpc://HOST:PORT, so that dozens of workers share this process's database "
        "connections instead of each holding its own. The proxy records the workers' "
        "heartbeats, fails their stale trials and keeps the trial budget exact under the same "
        "study lock as workers on the database. It has no authentication: anyone who reaches "
        "its port can read and change every study, so it binds 127.0.0.1 unless --host says "
        "otherwise (use a private network or an SSH tunnel). Ctrl-C stops it.",
    )
    add_storage(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=port, default=13000, help="port to listen on (13000)")
    p.set_defaults(handler=cmd_storage_proxy)
