"""MODEL_CARD.md beside the model train-best saves: what the model is for, the data it saw,
how it was chosen, how well it did on the held-out test split (with 95 % intervals), how
its probabilities were calibrated, and what the numbers cannot tell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.results.outputs import write_result

MODEL_CARD = "MODEL_CARD.md"
SECTIONS = (
    "Intended use",
    "Data",
    "Model selection",
    "Test performance",
    "Calibration",
    "Known limitations",
)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, int | float) else "n/a"


def _ci(interval: dict[str, Any] | None) -> str:
    """``91.2 % (95 % CI 85.0-96.3 %)``."""
    if not interval:
        return "n/a"
    if interval.get("lower") is None:
        return _pct(interval.get("value"))
    return f"{_pct(interval['value'])} (95 % CI {_pct(interval['lower'])} to {_pct(interval['upper'])})"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _intended_use() -> str:
    return (
        "A research model that sorts brain MRI slices into the classes below. It is **not a "
        "medical device and not for diagnosis**: it has not been validated clinically, and "
        "no decision about a patient may rest on its output. Use it to study transfer "
        "learning and hyperparameter search, and to compare against other research models."
    )


def _data(summary: dict[str, Any], data: Any) -> str:
    manifest = data.manifest
    counts = manifest.counts()
    splits = [s for s in ("train", "val", "test") if sum(counts.get(s, {}).values())]
    rows = [[c, *(counts[s][c] for s in splits)] for c in manifest.classes]
    rows.append(["**total**", *(sum(counts[s].values()) for s in splits)])
    policy = manifest.policy
    dropped = len(manifest.dropped)
    return "\n\n".join(
        [
            f"Dataset at `{data.root}` ({manifest.layout} layout), fingerprint "
            f"`{data.fingerprint}`.",
            _table(["class", *splits], rows),
            f"Split policy: **{policy.policy}** (validation fraction {policy.val_fraction}, "
            f"test fraction {policy.test_fraction}, seed {policy.seed}); duplicates: "
            f"**{policy.dedup}**. {len(manifest.duplicates)} duplicate group(s) found, "
            f"{len(manifest.cross_split_duplicates())} spanning more than one split; "
            f"{dropped} test image(s) dropped because they copy a training image"
            + (
                f"; {len(manifest.unreadable)} unreadable file(s) skipped."
                if manifest.unreadable
                else "."
            ),
        ]
    )


def _finalists(final: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for f in final.get("finalists") or final.get("candidates") or []:
        mean = f.get("cv_mean", f.get("mean"))
        std = f.get("cv_std", f.get("std"))
        cv = (
            f"{mean:.4f} ± {std:.4f}"
            if isinstance(mean, float) and isinstance(std, float)
            else "n/a"
        )
        rows.append([f.get("trial", "?"), cv, f.get("value", "")])
    return rows


def _selection(
    summary: dict[str, Any], payload: dict[str, Any], trials: dict[str, int] | None
) -> str:
    config = payload.get("study_config") or {}
    objective = config.get("objective") or {}
    metric = payload.get("metric") or objective.get("metric", "?")
    counted = (
        ", ".join(f"{n} {state}" for state, n in sorted(trials.items()))
        if trials
        else "not recorded"
    )
    parts = [
        f"Study **{summary.get('study')}**: trials {counted}; objective **{metric}** on the "
        f"validation split ({payload.get('direction', objective.get('direction', '?'))}). "
        f"Exported trial **{summary.get('trial')}** (validation {metric} {payload.get('value')}).",
        f"Configuration: `{json.dumps(summary.get('trial_config'))}`.",
    ]
    final = payload.get("finalize")
    if isinstance(final, dict):
        rows = _finalists(final)
        if rows:
            folds = final.get("folds", "K")
            parts.append(f"Finalists re-scored by {folds}-fold cross-validation (mean ± std):")
            parts.append(_table(["trial", f"CV {metric}", "search value"], rows))
        if final.get("rule"):
            parts.append(f"Rule that chose it: {final['rule']}.")
    refit = summary.get("refit")
    seeds = len(summary.get("seeds") or []) or 1
    parts.append(
        f"Retrained by train-best with {seeds} seed(s); kept: {summary.get('selected_by')} "
        f"(seed {summary.get('selected_seed')}); "
        + (
            "refit on train + validation."
            if refit
            else "trained on the train split, validation for early stopping."
        )
    )
    return "\n\n".join(parts)


def _performance(summary: dict[str, Any]) -> str:
    test, ci = summary.get("test") or {}, summary.get("intervals") or {}
    level = ci.get("level", 0.95)
    lines = [
        f"Evaluated once on **{summary.get('test_images')}** held-out test images. Intervals: "
        f"{ci.get('method', 'bootstrap')}, {ci.get('resamples', '?')} resamples, "
        f"{100 * level:.0f} % level.",
        f"- accuracy: {_ci(ci.get('accuracy') or {'value': test.get('accuracy')})}",
        f"- balanced accuracy: {_ci(ci.get('balanced_accuracy') or {'value': test.get('balanced_accuracy')})}",
        f"- macro F1: {_ci(ci.get('macro_f1') or {'value': test.get('macro_f1')})}",
    ]
    if len(summary.get("seeds") or []) > 1:
        lines.append(
            f"- accuracy over {len(summary['seeds'])} seeds: mean "
            f"{_pct(summary.get('test_accuracy_mean'))} ± {_pct(summary.get('test_accuracy_std'))}"
        )
    per_ci = ci.get("per_class") or {}
    rows = [
        [
            name,
            m.get("support"),
            _ci((per_ci.get(name) or {}).get("sensitivity") or {"value": m.get("recall")}),
            _ci((per_ci.get(name) or {}).get("specificity") or {"value": m.get("specificity")}),
            _ci((per_ci.get(name) or {}).get("f1") or {"value": m.get("f1")}),
            f"{m.get('precision', 0):.3f}",
        ]
        for name, m in (test.get("per_class") or {}).items()
    ]
    header = ["class", "test images", "sensitivity (recall)", "specificity", "F1", "precision"]
    table = _table(header, rows)
    return "\n".join(lines) + "\n\nPer class:\n\n" + table


def _calibration(summary: dict[str, Any]) -> str:
    cal = summary.get("calibration") or {}
    if not cal:
        return "Not calibrated."
    test = cal.get("test") or {}
    fitted = cal.get("fitted_on")
    # Records written before calibration was judged held out have no "applied": T was kept.
    applied = cal.get("applied", bool(fitted))
    reason = cal.get("reason") or "no validation data and no out-of-fold logits to fit on"
    head = (
        f"Temperature scaling: T = **{cal.get('temperature', 1.0):.3f}**, fitted on the {fitted} "
        f"by minimum negative log-likelihood, {reason}. model.keras carries T inside its head, "
        "so every prediction and export gives calibrated probabilities (the predicted class "
        "is unchanged)."
        if applied
        else f"Not calibrated (T = 1): {reason.removeprefix('not applied: ')}."
    )
    rows = [
        [
            f"ECE ({cal.get('bins', 15)} bins)",
            f"{test.get('ece_before', 0):.4f}",
            f"{test.get('ece_after', 0):.4f}",
        ],
        ["Brier score", f"{test.get('brier_before', 0):.4f}", f"{test.get('brier_after', 0):.4f}"],
        ["log loss", f"{test.get('nll_before', 0):.4f}", f"{test.get('nll_after', 0):.4f}"],
    ]
    return head + "\n\nOn the test split:\n\n" + _table(["measure", "before", "after"], rows)


def _limitations(summary: dict[str, Any], payload: dict[str, Any], data: Any) -> str:
    ci = (summary.get("intervals") or {}).get("accuracy") or {}
    width = (
        f" (the accuracy's 95 % interval is {_pct(ci['upper'] - ci['lower'])} wide)"
        if ci.get("lower") is not None
        else ""
    )
    name = str((payload.get("study_config") or {}).get("name", ""))
    phantom = "demo" in name or "tiny" in name or "synth" in str(data.root).lower()
    items = [
        (
            "**Phantom data**: trained and tested on synthetic slices from `tumor-search data "
            "synth`; these numbers say nothing about real MRI."
            if phantom
            else "If the data are `tumor-search data synth` phantoms, these numbers say "
            "nothing about real MRI."
        ),
        f"One test split of {summary.get('test_images')} images from one source{width}; "
        "small classes have wide intervals. No external validation (other scanners, "
        "sites, protocols or populations).",
        "Single 2-D slices, not whole studies; classes outside the training set (other "
        "tumours, artefacts, other sequences) still get one of the known labels.",
        "Percentile bootstrap intervals collapse to a point for a rate of 0 % or 100 % "
        "and understate the uncertainty of small classes.",
        "Calibration was fitted on data of the same source; it may not hold elsewhere.",
    ]
    return "\n".join(f"- {item}" for item in items)


def test_result_markdown(summary: dict[str, Any]) -> str:
    """The test metrics with their intervals and the calibration, for the dashboard note."""
    return f"{_performance(summary)}\n\n### Calibration\n\n{_calibration(summary)}"


def render_model_card(
    summary: dict[str, Any],
    payload: dict[str, Any],
    data: Any,
    trials: dict[str, int] | None = None,
) -> str:
    """The model card's Markdown text.

    Args:
        summary: The metrics.json document.
        payload: The export (best.json) train-best read.
        data: The `StudyData` it trained and tested on.
        trials: The study's trial counts by state, when the study could be read.
    """
    classes = ", ".join(summary.get("classes") or [])
    bodies = (
        _intended_use(),
        _data(summary, data),
        _selection(summary, payload, trials),
        _performance(summary),
        _calibration(summary),
        _limitations(summary, payload, data),
    )
    text = [
        f"# Model card: study {summary.get('study')}, trial {summary.get('trial')}",
        f"Classes: {classes}. Written by `tumor-search train-best` at {summary.get('trained_at')}; "
        f"files: `{summary.get('model', 'model.keras')}`, `metrics.json`"
        + (
            f", {len(summary['examples'])} Grad-CAM examples under `explain/`."
            if summary.get("examples")
            else "."
        ),
    ]
    text += [f"## {title}\n\n{body}" for title, body in zip(SECTIONS, bodies, strict=True)]
    return "\n\n".join(text) + "\n"


def write_model_card(
    out_dir: Path,
    summary: dict[str, Any],
    payload: dict[str, Any],
    data: Any,
    trials: dict[str, int] | None = None,
) -> Path:
    """Write MODEL_CARD.md into `out_dir` atomically; its path."""
    path = Path(out_dir) / MODEL_CARD
    write_result(path, render_model_card(summary, payload, data, trials).encode("utf-8"))
    return path
