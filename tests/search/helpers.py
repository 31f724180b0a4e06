"""Tiny study configs and data for the search tests (seconds per trial on 2 cores)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

TINY_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "trials": 3,
    "weights": "none",
    "data": {"path": "data", "split": "official", "seed": 1, "val_fraction": 0.2, "image_size": 32},
    "training": {"epochs": 2, "early_stopping_patience": 2, "seed": 0},
    "space": {
        "backbone": ["small_cnn"],
        "head_depth": {"low": 0, "high": 1},
        "head_width": [16],
        "dropout": {"low": 0.0, "high": 0.3},
        "learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
        "fine_tune": [1.0],
        "batch_size": [16],
    },
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
    "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "heartbeat": {"interval": 1, "grace_period": 3, "max_retry": 3},
}


def write_config(path: Path, **changes: Any) -> Path:
    """Write TINY_CONFIG with top-level sections replaced or updated by `changes`."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_for(
    predicate, timeout: float = 120.0, interval: float = 0.3, what: str = "condition"
) -> None:  # noqa: ANN001
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def trials_of(storage: str, study: str) -> list:
    """The trials of `study`, read the way the CLI opens storage: while a process is still
    creating the tables this waits for it (a bare Optuna open would race it for the version
    rows)."""
    import optuna

    from search.runtime.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(
        deepcopy=False
    )


def running_with_epochs(storage: str, study: str, epochs: int = 1) -> bool:
    """A trial is running and has reported at least `epochs` epochs."""
    from optuna.trial import TrialState

    try:
        trials = trials_of(storage, study)
    except KeyError:  # the study is not created yet
        return False
    return any(
        t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs for t in trials
    )


def create_cli(
    name: str, config: Path, data: Path, storage: str, command: str = "study create"
) -> Any:
    """`study create` (or `run`) of study `name` from `config` on `data`, as a user types it."""
    from tests.conftest import run_cli

    return run_cli(
        *command.split(),
        "--study",
        name,
        "--config",
        str(config),
        "--data",
        str(data),
        "--storage",
        storage,
    )


def create_tiny_study(root: Path, data: Path, storage: str, name: str, **changes: Any) -> Path:
    """`study create` through the CLI for a tiny config; returns the config file."""
    config = write_config(root / f"{name}.yaml", **changes)
    result = create_cli(name, config, data, storage)
    assert result.returncode == 0, result.stderr
    return config


def wait_for_pause(proc, point: str) -> str:  # noqa: ANN001
    """Read `proc`'s stderr until it logs the test pause at `point`; what it printed so far.

    Fails the test if the process ends without reaching the pause.
    """
    import pytest

    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"test pause at {point}" in line:
            return "".join(seen)
    pytest.fail(f"the process never reached the pause at {point}: " + "".join(seen))


def database_error(url: str, **connect_args: Any) -> Exception:
    """The real error of connecting to `url` (a refused port, an unknown host, ...)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - the error is the point
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{url} did not fail")


REFUSED_URL = "postgresql+psycopg2://u:secret@127.0.0.1:1/db"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> Any:
    """GET `url` straight (a proxy set in the environment must not carry a loopback request)."""
    import json
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return json.loads(response.read())


def http_status(url: str, method: str = "GET", user: str | None = None, password: str = "") -> int:
    """The HTTP status of one request (straight: no proxy carries a loopback request)."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def serve_dashboard(storage: str, *args: str) -> Iterator[str]:
    """`tumor-search dashboard ARGS` on a free port; yields its loopback base URL once it
    answers (a 401 of a dashboard that wants a login counts)."""
    import time
    import urllib.error

    from tests.conftest import start_cli

    port = free_port()
    proc = start_cli("dashboard", "--storage", storage, "--port", str(port), *args)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(f"{base}/api/studies")
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the dashboard did not answer in 60 s"
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def dashboard_study(base: str, name: str) -> Any:
    """The dashboard's JSON of study `name` (what its pages draw)."""
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    entry = next(s for s in studies if s["study_name"] == name)
    return get_json(f"{base}/api/studies/{entry['study_id']}")


def train_best_cli(best: Path, data: Path, out: Path, *more: str) -> Any:
    """`tumor-search train-best --config best --data data --out out [more...]`."""
    from tests.conftest import run_cli

    return run_cli(
        "train-best", "--config", str(best), "--data", str(data), "--out", str(out), *more
    )


def expected_device() -> str:
    """The device `tumor-search` must report on this machine, asked of the Keras backend's
    own library (not of `models.backend`): ``CPU`` or ``N GPU(s)``, and CUDA_VISIBLE_DEVICES
    when it is set."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        gpus = sum(1 for d in jax.devices() if d.platform == "gpu")
    else:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    where = f"{gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "CPU"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return where + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")
