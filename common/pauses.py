"""Test-only pauses at named points of the service, to open a race window on purpose.

``TUMOR_SEARCH_TEST_PAUSE=point:seconds[,point:seconds...]`` makes `pause(point)` log one
line and sleep. Unset (always, outside tests), `pause` does nothing.
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "TUMOR_SEARCH_TEST_PAUSE"


def pause(point: str) -> None:
    """Sleep at `point` if the environment asks for it (see the module docstring)."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition(":")
        if name.strip() == point:
            from common.progress import log

            log(f"test pause at {point} for {float(seconds):g}s")
            time.sleep(float(seconds))
