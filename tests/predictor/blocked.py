"""Run the CLI in a Python that cannot import the deep-learning frameworks or Optuna."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

BLOCKED = ("tensorflow", "keras", "jax", "torch", "optuna")

BLOCKER = """
import sys
BLOCKED = {blocked!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked by the test: " + name)
        return None
sys.meta_path.insert(0, Blocker())
from search.cli import main
code = main({argv!r})
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("leaked:", leaked, file=sys.stderr)
sys.exit(code or (3 if leaked else 0))
"""


def run_without_frameworks(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`tumor-search ARGV` where importing any of `BLOCKED` fails; stderr ends with the
    blocked modules that were imported anyway (``leaked: []``), and the exit code is 3 when
    one was."""
    code = BLOCKER.format(blocked=BLOCKED, argv=argv)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
