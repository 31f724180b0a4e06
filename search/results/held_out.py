"""train-best's steps after the selected model is saved: Grad-CAM examples of right and
wrong test predictions, and the model card beside the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.progress import log
from search.errors import one_line
from search.results.model_card import write_model_card


def write_examples_and_card(
    model: Any,
    summary: dict[str, Any],
    payload: dict[str, Any],
    data: Any,
    test: Any,
    out_dir: Path,
    storage_url: str | None,
) -> None:
    """Write the Grad-CAM examples and MODEL_CARD.md into `out_dir`; record ``out_dir``
    (absolute) and ``examples`` in `summary` (the metrics.json document), in place."""
    summary["out_dir"] = str(Path(out_dir).resolve())
    summary["examples"] = grad_cam_examples(model, test, data, out_dir)
    summary["model_card"] = write_model_card(
        out_dir, summary, payload, data, study_trials(payload, storage_url)
    ).name


def study_trials(payload: dict[str, Any], storage_url: str | None) -> dict[str, int] | None:
    """The study's trials counted by state, or None when the study cannot be read."""
    from search.runtime.storage import STORAGE_ENV

    url = storage_url or os.environ.get(STORAGE_ENV) or payload.get("storage")
    if not url or "***" in url:
        return None
    try:
        import optuna

        from search.runtime.storage import open_storage

        study = optuna.load_study(study_name=payload["study"], storage=open_storage(url))
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        return counts
    except Exception:  # noqa: BLE001 - the card says "not recorded" instead
        return None


def grad_cam_examples(model: Any, test: Any, data: Any, out_dir: Path) -> list[dict[str, Any]]:
    """Grad-CAM overlays of right and wrong test predictions (`search.results.explain`),
    written under `out_dir`; an empty list when they cannot be drawn (never fatal)."""
    try:
        from search.results.explain import write_examples
    except ImportError:
        return []
    paths = [Path(data.root) / e.path for e in data.manifest.split("test")]
    try:
        return write_examples(
            model,
            test.x,
            test.y,
            paths if len(paths) == len(test.y) else None,
            list(data.classes),
            out_dir,
        )
    except Exception as exc:  # noqa: BLE001 - the model and metrics are already written
        log(f"warning: no Grad-CAM examples: {one_line(str(exc))}")
        return []
