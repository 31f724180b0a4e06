"""Parts (c) and (d): the service's own `run` on the phantoms for a fixed time box.

`run --timeout BOX` starts no trial after BOX seconds; a trial still training then gets a
grace period, after which it is stopped (its worker is told to stop, and killed if it must
be). The figures come from the study's storage (trial states and user attributes) and from
the workers' epoch lines (``[trial N] epoch k/E ... (S s)``): compile time is a trial's first
epoch minus its steady epoch (the median of its later ones).
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.gpu.proc import Boxed, GpuSampler, run_boxed

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "gpu.yaml"
EPOCH_LINE = re.compile(r"\[trial (\d+)\] epoch (\d+)/\d+ .*\((\d+(?:\.\d+)?)s\)\s*$")


def study_config(dry: bool, out: Path) -> Path:
    """The study config of this run: gpu.yaml, shrunk to CPU size for a dry run."""
    config = yaml.safe_load(CONFIG.read_text())
    if dry:
        config["data"]["image_size"] = 32
        config["training"]["epochs"] = 2
        config["training"]["early_stopping_patience"] = 0
        config["space"]["backbone"] = ["small_cnn"]
        config["space"]["head_width"] = [16]
        config["space"]["head_depth"] = [1]  # one shape: later trials reuse the first's steps
        config["space"]["batch_size"] = [8]
        config["sampler"]["n_startup_trials"] = 1
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


@dataclass
class Box:
    """One study run: which storage and study, how many workers, how long."""

    label: str  # "c" or "d"
    workers: int
    seconds: float  # the --timeout: no trial starts after it
    grace: float  # then a trial in flight gets this long to finish


def epoch_seconds(log: Path) -> dict[int, list[float]]:
    """Each trial's epoch durations, read from the workers' output."""
    out: dict[int, list[float]] = {}
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        match = EPOCH_LINE.search(line)
        if match:
            trial, epoch, seconds = int(match[1]), int(match[2]), float(match[3])
            times = out.setdefault(trial, [])
            if epoch == len(times) + 1:
                times.append(seconds)
    return out


def compile_text(epochs: dict[int, list[float]]) -> str:
    """``first epoch 41.2 s, steady 1.9 s: compile ~39.3 s a trial (n=3)``."""
    rows = [times for times in epochs.values() if len(times) >= 2]
    if not rows:
        ones = [times[0] for times in epochs.values() if times]
        if not ones:
            return "no epoch finished"
        return f"first epoch {statistics.mean(ones):.1f} s (no trial reached a 2nd epoch)"
    first = statistics.mean(times[0] for times in rows)
    steady = statistics.mean(statistics.median(times[1:]) for times in rows)
    return (
        f"first epoch {first:.1f} s, steady epoch {steady:.2f} s: "
        f"compile ~{first - steady:.1f} s a trial (n={len(rows)})"
    )


def trial_counts(url: str, name: str) -> dict[str, Any]:
    """States, best value and mean wall time of the study's trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    state = optuna.trial.TrialState
    count = {s.name.lower(): sum(t.state == s for t in trials) for s in state}
    # A trial in flight when the box ends is stopped: killed (still RUNNING) or, when its
    # worker takes the clean path, failed as "interrupted by SIGTERM" and queued again.
    cut = [t for t in trials if t.state == state.FAIL and _interrupted(t)]
    count["running"] += len(cut)
    count["fail"] -= len(cut)
    done = [t for t in trials if t.state in (state.COMPLETE, state.PRUNED)]
    walls = [t.user_attrs["wall_seconds"] for t in done if "wall_seconds" in t.user_attrs]
    compiles = [t.user_attrs.get("compile_seconds") for t in done]
    compiles = [c for c in compiles if c is not None]
    values = [t.value for t in trials if t.state == state.COMPLETE and t.value is not None]
    count["finished"] = len(done)
    count["best"] = max(values) if values else None
    count["wall"] = statistics.mean(walls) if walls else None
    count["compile"] = statistics.mean(compiles) if compiles else None
    count["sharing"] = sharing(done)
    runtimes = {_runtime(t.user_attrs.get("runtime")) for t in trials} - {None}
    count["runtime"] = ", ".join(sorted(runtimes)) if runtimes else None
    return count


SHAPE_KEYS = ("backbone", "head_depth", "head_width", "batch_size", "fine_tune", "feature_layer")


def sharing(trials: list[Any]) -> dict[str, Any] | None:
    """How much later trials of one shape compile, against the first of that shape: the
    mean of their compile_seconds over the first's (None without such a pair), and the
    JAX cache hits the trials counted."""
    first: dict[tuple, float] = {}
    later: list[tuple[float, float]] = []
    for trial in sorted(trials, key=lambda t: t.number):
        seconds = trial.user_attrs.get("compile_seconds")
        config = trial.user_attrs.get("trial_config") or {}
        if seconds is None:
            continue
        key = tuple(config.get(k) for k in SHAPE_KEYS)
        if key in first:
            later.append((first[key], seconds))
        else:
            first[key] = seconds
    hits = sum(int(t.user_attrs.get("jax_cache_hits") or 0) for t in trials)
    if not later:
        return {"ratio": None, "hits": hits}
    firsts = statistics.mean(f for f, _ in later)
    laters = statistics.mean(s for _, s in later)
    ratio = laters / firsts if firsts > 0 else None
    return {"ratio": ratio, "first": firsts, "later": laters, "pairs": len(later), "hits": hits}


def sharing_text(shared: dict[str, Any] | None) -> str:
    if not shared:
        return ""
    if shared.get("ratio") is None:
        return f"; no two finished trials of one shape; JAX cache hits {shared['hits']}"
    return (
        f"; same-shape trials compile {shared['later']:.2f} s against the first's "
        f"{shared['first']:.2f} s ({shared['ratio']:.0%}, n={shared['pairs']}), "
        f"JAX cache hits {shared['hits']}"
    )


def finished_text(counts: dict[str, Any]) -> str:
    """``12 trials finished (8 completed, 4 pruned, 1 cut, 0 failed)``."""
    return (
        f"{counts['finished']} trials finished ({counts.get('complete', 0)} completed, "
        f"{counts.get('pruned', 0)} pruned, {counts.get('running', 0)} cut, "
        f"{counts.get('fail', 0)} failed)"
    )


def compile_attrs_text(counts: dict[str, Any]) -> str:
    """The trials' own compile_seconds and the same-shape sharing, as `trial_counts` read."""
    text = ""
    if counts.get("compile") is not None:
        text += f"; trials' own compile_seconds mean {counts['compile']:.1f} s"
    return text + sharing_text(counts.get("sharing"))


def _interrupted(trial: Any) -> bool:
    return str(trial.user_attrs.get("fail_reason", "")).startswith("interrupted by")


def _runtime(value: Any) -> str | None:
    """``jax on 1 GPU`` from a trial's runtime attribute (backend, device), if it has one."""
    if not isinstance(value, dict) or "backend" not in value:
        return None
    return f"{value['backend']} on {value.get('device', '?')}"


def _command(python: str, box: Box, config: Path, data: Path, url: str) -> list[str]:
    command = [python, "-m", "search", "run", "--config", str(config), "--data", str(data)]
    command += ["--study", f"gpu-proof-{box.label}", "--storage", url]
    # The box times the search alone: no closing finalize.
    command += ["--timeout", f"{box.seconds:g}", "--workers", str(box.workers), "--no-finalize"]
    return command


def run_box(
    python: str, box: Box, config: Path, data: Path, workdir: Path, env: dict[str, str]
) -> tuple[str, dict[str, Any], Boxed]:
    """Run one boxed study; its line of figures, the counts, and the child's record."""
    stamp = time.strftime("%H%M%S")
    url = f"sqlite:///{workdir / f'study-{box.label}-{stamp}.db'}"
    log = workdir / f"study-{box.label}-{stamp}.log"
    sampler = GpuSampler().start()
    try:
        boxed = run_boxed(
            _command(python, box, config, data, url), env, box.seconds + box.grace, log
        )
    finally:
        sampler.stop()
    try:
        counts = trial_counts(url, f"gpu-proof-{box.label}")
    except Exception as exc:  # noqa: BLE001 - the study may never have been made
        counts = {"finished": 0, "error": f"{type(exc).__name__}: {exc}"}
    per_hour = counts["finished"] * 3600 / boxed.seconds if boxed.seconds else 0.0
    counts["per_hour"] = per_hour
    text = (
        f"{box.workers} worker(s), box {box.seconds:.0f} s (+{box.grace:.0f} s grace), "
        f"ran {boxed.seconds:.0f} s: {finished_text(counts)} = "
        f"{per_hour:.0f} trials/hour; {sampler.text()}; {compile_text(epoch_seconds(log))}"
    )
    text += compile_attrs_text(counts)
    if counts.get("runtime"):
        text += f"; trials ran on {counts['runtime']}"
    if counts.get("wall") is not None:
        text += f"; mean trial wall {counts['wall']:.1f} s"
    if counts.get("best") is not None:
        text += f"; best val_accuracy {counts['best']:.3f}"
    return text, counts, boxed
