"""Dry run only (bench/gpu/check puts this folder on PYTHONPATH): at exit, every process
writes the top-level modules it imported to ``$BENCH_GPU_MODULES/modules-<backend>-<pid>.txt``
so that `bench.gpu.wheels.uncovered_modules` can tell whether the carried wheels cover them."""

from __future__ import annotations

import atexit
import os
import sys


def _write() -> None:
    folder = os.environ.get("BENCH_GPU_MODULES")
    if not folder:
        return
    names = sorted({name.split(".", 1)[0] for name in list(sys.modules)})
    backend = os.environ.get("KERAS_BACKEND", "none")
    try:
        path = os.path.join(folder, f"modules-{backend}-{os.getpid()}.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(names))
    except OSError:
        pass


atexit.register(_write)
