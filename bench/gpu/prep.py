"""The phantoms of parts (c) and (d), made in the background while (a) and (b) use the GPU.

    python -m bench.gpu.prep --out DIR --per-class 816 --size 224 --config study.yaml

Writes the phantoms with the service's own command (`data synth`), then decodes them once
as a worker would (`prepare`, `load_train_val`) so that the study boxes start on a warm
decode cache (``$TUMOR_SEARCH_CACHE``). A folder already made with the same settings is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu.probe import emit

MARKER = ".gpu-proof.json"


def synth(out: Path, per_class: int, size: int) -> float:
    """Seconds spent writing the phantoms (0 when the folder is already there)."""
    settings = {"per_class": per_class, "size": size}
    marker = out / MARKER
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return 0.0
    start = time.perf_counter()
    command = [sys.executable, "-m", "search", "data", "synth", "--out", str(out)]
    command += ["--per-class", str(per_class), "--size", str(size), "--seed", "0"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    marker.write_text(json.dumps(settings))
    return time.perf_counter() - start


def warm(out: Path, config_path: Path) -> dict[str, float]:
    """Decode the train and validation splits into the cache, as a worker's first load."""
    from search.config import load_config
    from search.study_data import load_train_val, prepare

    start = time.perf_counter()
    config = load_config(str(config_path)).with_overrides(data_path=str(out))
    data = prepare(config, str(out))
    arrays = load_train_val(data, config.data.image_size)
    return {
        "warm_s": time.perf_counter() - start,
        "train": len(arrays.y_train),
        "val": len(arrays.y_val),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    emit(event="synth", synth_s=synth(args.out, args.per_class, args.size))
    emit(event="warm", **warm(args.out, args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
