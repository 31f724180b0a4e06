"""Starting several worker processes: one per GPU (``--gpus 0,1``) or N on one machine.

Each child is `tumor-search worker` with ``CUDA_VISIBLE_DEVICES`` set to its GPU; its output
lines are prefixed with ``[gpu0]`` or ``[w1]``; Ctrl-C (or SIGTERM) is passed on to every
child, and the launcher's exit code is the first non-zero child exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from search.errors import InputError


@dataclass(frozen=True)
class WorkerSpec:
    label: str
    gpu: str | None


def parse_gpus(text: str) -> list[str]:
    """``"0,1,3"`` -> ``["0", "1", "3"]``.

    Raises:
        InputError: not a comma-separated list of distinct GPU indices.
    """
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise InputError(f"--gpus takes comma-separated GPU indices such as 0,1; got {text!r}")
    if len(set(ids)) != len(ids):
        raise InputError(f"--gpus lists a GPU twice: {text!r}")
    return ids


def worker_specs(workers: int, gpus: list[str] | None) -> list[WorkerSpec]:
    if gpus:
        return [WorkerSpec(f"gpu{g}", g) for g in gpus]
    return [WorkerSpec(f"w{i}", None) for i in range(workers)]


def _pump(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"[{prefix}] {line}" if line.endswith("\n") else f"[{prefix}] {line}\n")
            out.flush()


def _worker_command(
    study: str,
    storage_url: str,
    data_dir: str | None,
    timeout: float | None,
    quiet: bool,
    leave_for_finalize: bool = False,
) -> list[str]:
    base = [sys.executable, "-m", "search", "worker", "--study", study, "--storage", storage_url]
    if data_dir:
        base += ["--data", str(data_dir)]
    if timeout is not None:
        base += ["--timeout", str(timeout)]
        if leave_for_finalize:
            base.append("--leave-for-finalize")
    if quiet:
        base.append("--quiet")
    return base


def worker_env(spec: WorkerSpec, workers: int) -> dict[str, str]:
    """A worker's environment: its GPU, and its share of this machine's cores.

    Several workers on one machine each default to a thread per core for their CPU work
    (PyTorch's OpenMP threads spin while they wait), so they fight over the cores and
    starve one another's kernel launches; each gets cores/workers threads unless
    OMP_NUM_THREADS is set already."""
    env = dict(os.environ)
    if spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.gpu
    if workers > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def _start_worker(
    spec: WorkerSpec, command: list[str], lock: threading.Lock, workers: int
) -> tuple[subprocess.Popen[str], threading.Thread]:
    """Start one worker process and the thread that prefixes its output lines."""
    env = worker_env(spec, workers)
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # Ctrl-C reaches the children through us, once
    )
    assert proc.stdout is not None
    pump = threading.Thread(
        target=_pump, args=(proc.stdout, spec.label, sys.stderr, lock), daemon=True
    )
    pump.start()
    return proc, pump


class Forwarder:
    """Passes the signals the launcher receives on to every child, each signal once.

    The handler only records a signal; the main thread sends it, to the children running
    then and to any started after it (a signal that arrives while a child is starting
    would otherwise miss that child, which would then run its trials to the end)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._sent: dict[int, int] = {}  # pid -> how many of `received` it has been sent

    def handler(self, signum: int, frame: object) -> None:
        self.received.append(signum)

    def deliver(self, procs: list[tuple[WorkerSpec, subprocess.Popen[str]]]) -> None:
        for _, proc in procs:
            done = self._sent.get(proc.pid, 0)
            pending = self.received[done:]  # a copy: a signal arriving now waits its turn
            for signum in pending:
                if proc.poll() is None:
                    proc.send_signal(signum)
            self._sent[proc.pid] = done + len(pending)


def _wait_all(
    procs: list[tuple[WorkerSpec, subprocess.Popen[str]]], forwarder: Forwarder
) -> dict[str, int]:
    codes: dict[str, int] = {}
    while len(codes) < len(procs):
        forwarder.deliver(procs)
        for spec, proc in procs:
            if spec.label not in codes and proc.poll() is not None:
                codes[spec.label] = proc.returncode
        time.sleep(0.1)
    return codes


def launch(
    specs: list[WorkerSpec],
    study: str,
    storage_url: str,
    data_dir: str | None,
    timeout: float | None,
    quiet: bool = False,
    leave_for_finalize: bool = False,
) -> int:
    """Run one `tumor-search worker` process per spec and wait for all of them
    (`leave_for_finalize`: see `run_worker`).

    Returns:
        0 when every worker exited 0; else the first non-zero exit code (130/143 when
        interrupted).
    """
    command = _worker_command(study, storage_url, data_dir, timeout, quiet, leave_for_finalize)
    procs: list[tuple[WorkerSpec, subprocess.Popen[str]]] = []
    lock = threading.Lock()
    pumps: list[threading.Thread] = []
    forwarder = Forwarder()
    received = forwarder.received
    previous = {s: signal.signal(s, forwarder.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for spec in specs:
            if received:  # stopped while starting: start no more
                break
            proc, pump = _start_worker(spec, command, lock, len(specs))
            procs.append((spec, proc))
            pumps.append(pump)
            forwarder.deliver(procs)
        codes = _wait_all(procs, forwarder)
        for pump in pumps:
            pump.join(timeout=5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for spec, _ in procs:
        code = codes[spec.label]
        if code:
            print(f"[{spec.label}] worker exited with code {code}", file=sys.stderr)
    if received:
        return 128 + received[0]
    return next((codes[spec.label] for spec, _ in procs if codes[spec.label]), 0)
