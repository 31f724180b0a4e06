"""The Markdown table of `bench/real.py`'s result (also `bench/real.py --table RESULT.json`)."""

from __future__ import annotations

from typing import Any

PATHS = (("plain", "run, export, train-best"), ("final", "run, finalize, export, train-best"))


def _interval(record: dict[str, Any] | None) -> str:
    if not record:
        return "n/a"
    return f"{record['value']:.3f} [{record['lower']:.3f}, {record['upper']:.3f}]"


def _split_rows(check: dict[str, Any]) -> list[str]:
    counts: dict[str, dict[str, int]] = check.get("splits") or {}
    classes = sorted({c for per_class in counts.values() for c in per_class})
    rows = [
        "| split | " + " | ".join(classes) + " | all |",
        "|---|" + "---:|" * (len(classes) + 1),
    ]
    for split, per_class in counts.items():
        cells = [str(per_class.get(c, 0)) for c in classes]
        rows.append(f"| {split} | " + " | ".join(cells) + f" | {sum(per_class.values())} |")
    return rows


def _phase_rows(result: dict[str, Any]) -> list[str]:
    rows = ["| phase | wall |", "|---|---:|"]
    rows += [f"| {name} | {seconds:.0f} s |" for name, seconds in result["seconds"].items()]
    rows.append(f"| **all** | **{result['total_seconds'] / 60:.1f} min** |")
    return rows


def _cache_lines(result: dict[str, Any]) -> list[str]:
    extraction = result["extraction"]
    computed = result["computed_after_run"]
    pool = sum(sum(v.values()) for k, v in result["check"]["splits"].items() if k != "test")
    rate = extraction["per_second"]
    per_split = 4 * pool  # 3 finalize folds and the refit, each a new split of train+val
    lines = [
        f"- feature extraction: {extraction['images']:.0f} images in "
        f"{extraction['seconds']:.0f} s, **{rate:.1f} images/s** (over the completed trials that computed features)",
        "- features computed after `run`: "
        + ", ".join(f"{name} {n}" for name, n in computed.items())
        + " images (cached per image)",
    ]
    if rate:
        lines.append(
            f"- a cache per split would have computed {per_split} images per feature layer "
            f"for finalize's 3 folds and the refit: about {per_split / rate / 60:.0f} min "
            "per layer at the rate above"
        )
    return lines


def _metric_rows(result: dict[str, Any]) -> list[str]:
    rows = [
        "| | " + " | ".join(f"{label}" for _, label in PATHS) + " |",
        "|---|" + "---|" * len(PATHS),
    ]
    metrics = {key: result[key] for key, _ in PATHS}

    def row(name: str, cell: Any) -> None:
        rows.append(f"| {name} | " + " | ".join(cell(metrics[key]) for key, _ in PATHS) + " |")

    row("trial", lambda m: str(m.get("trial")))
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        row(f"test {name.replace('_', ' ')}", lambda m, n=name: _interval(m["intervals"][n]))
    classes = list(metrics["final"]["intervals"]["per_class"])
    for c in classes:
        for kind, label in (("sensitivity", "recall"), ("f1", "F1")):
            row(
                f"{c} {label}",
                lambda m, c=c, k=kind: _interval(m["intervals"]["per_class"][c][k]),
            )
    for measure in ("nll", "brier", "ece"):
        row(
            f"{measure.upper() if measure != 'brier' else 'Brier'} before -> after calibration",
            lambda m, s=measure: (
                f"{m['calibration']['test'][f'{s}_before']:.4f} -> "
                f"{m['calibration']['test'][f'{s}_after']:.4f}"
            ),
        )
    row(
        "calibration applied",
        lambda m: (
            f"{'yes' if m['calibration'].get('applied') else 'no'} "
            f"(T = {m['calibration']['temperature']:.2f})"
        ),
    )
    return rows


def render(result: dict[str, Any]) -> str:
    """The table, then the line scripts read: ``bench-real test_accuracy (CPU): 0.xxx``."""
    final = result["final"]
    trial = result["final_export"].get("params") or {}
    lines = [
        f"bench-real on {result['data']}: backbones {', '.join(result['backbones'])}, "
        f"{result['trials']} trials, {result['image_size']} px, pooled near-dedup split",
        "",
        *_split_rows(result["check"]),
        "",
        *_phase_rows(result),
        "",
        *_cache_lines(result),
        "",
        *_metric_rows(result),
        "",
        f"finalize's winner: trial {final.get('trial')} {trial}",
        "",
        f"bench-real test_accuracy (CPU): {final['test']['accuracy']:.3f}",
    ]
    return "\n".join(lines)
