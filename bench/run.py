"""`make bench`: every benchmark, printing `name: value` lines (ratios measured side by side
in one run, so a busy machine slows both sides alike)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (  # noqa: E402
    deploy,
    feature_cache,
    near_dup,
    pruning,
    service_overhead,
    trial_overhead,
)
from bench.harness import note  # noqa: E402

BENCHES = {
    "feature_cache": feature_cache.run,
    "service_overhead": service_overhead.run,
    "trial_overhead": trial_overhead.run,
    "search_epochs": trial_overhead.run_epochs,
    "pruning": pruning.run,
    "near_dup": near_dup.run,
    "deploy": deploy.run,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    parser.add_argument(
        "--workdir", help="keep data and studies here (default: a temporary folder)"
    )
    args = parser.parse_args()
    from common.progress import set_quiet

    set_quiet(True)
    with tempfile.TemporaryDirectory(prefix="tumor-bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ["TUMOR_SEARCH_CACHE"] = str(workdir / "cache")
        start = time.perf_counter()
        for name in args.only or list(BENCHES):
            BENCHES[name](workdir)
        note(f"benchmarks took {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
