"""Tiny study configs and data for the search tests (seconds per trial on 2 cores)."""

from __future__ import annotations

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
