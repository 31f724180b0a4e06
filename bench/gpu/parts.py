"""The parts of the GPU proof, in order, each boxed and each reported as it ends."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gpu import study, wheels
from bench.gpu.proc import Boxed, run_boxed
from bench.gpu.report import Report

MIN_BOX = 10.0  # a part with less time than this left is skipped


@dataclass
class Context:
    sizes: Any  # bench.gpu.check.Sizes
    backends: list[str]
    workdir: Path
    env: dict[str, str]
    python: str
    dry: bool
    report: Report
    started: float  # time.time() when the command started (the wheel install included)
    logs: Path | None = None  # where each part's log is copied as the part ends
    parts: str = "abcd"  # which parts run (the dry run's wheel checks always do)
    workers: int = 1  # workers of (c); (d) runs twice as many
    per_hour: dict[int, float] = field(default_factory=dict)  # workers -> trials/hour
    study_box: float | None = None  # the box (and grace) that (c) had: (d) gets the same

    def left(self) -> float:
        return self.started + self.sizes.deadline - time.time()

    def box(self, part: str, backend: str, want: float, whole: bool = False) -> float | None:
        """`want` seconds, or what is left; None (and a line saying so) when too little
        (less than `MIN_BOX`, or less than `want` when the part needs its `whole` box)."""
        left = self.left()
        if left < (want if whole else MIN_BOX):
            self.report.line(
                part,
                backend,
                f"skipped: {max(left, 0):.0f} s left of the {self.sizes.deadline:g} s deadline",
                failed=self.dry,
            )
            return None
        return min(want, left)

    def save_logs(self) -> None:
        """Copy this run's logs so far (their last 200 kB) to `logs`, if asked: with the
        results file, at most 7 files (the device tool brings back 8)."""
        if self.logs is None:
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        for path in self.workdir.glob("*.log"):
            if path.stat().st_mtime < self.started:
                continue  # an earlier run's, in the same work folder
            with open(path, "rb") as src, open(self.logs / path.name, "wb") as dst:
                src.seek(max(path.stat().st_size - 200_000, 0))
                shutil.copyfileobj(src, dst)

    def child_env(self, backend: str, part: str) -> dict[str, str]:
        """KERAS_BACKEND, and a JAX compilation cache of this part's own (each starts cold)."""
        cache = self.workdir / f"jax-cache-{part}-{backend}-{int(time.time())}"
        return {**self.env, "KERAS_BACKEND": backend, "JAX_COMPILATION_CACHE_DIR": str(cache)}


def _cut(boxed: Boxed, dry: bool) -> tuple[str, bool]:
    """A suffix saying how the child ended, and whether that is a failure."""
    if boxed.timed_out:
        return f"; cut at the end of its {boxed.seconds:.0f} s box", dry
    if boxed.returncode != 0:
        return f"; FAILED (exit {boxed.returncode}): {boxed.tail()}", True
    return "", False


def wheel_part(ctx: Context) -> None:
    """(w) The carried wheel set resolves offline (dry runs; downloads .whl/ if needed)."""
    try:
        fetched = ""
        if wheels.missing():
            wheels.download()
            fetched = " (downloaded now)"
        problems = wheels.missing() + wheels.unmet_requirements()
        error = "" if problems else wheels.resolve_offline()
    except Exception as exc:  # noqa: BLE001 - reported as this part's line
        problems, error, fetched = [f"{type(exc).__name__}: {exc}"], "", ""
    n = len(wheels.wheel_files())
    if problems or error:
        text = f"{n} wheels in .whl{fetched}: FAILED: {'; '.join(problems) or error}"
        ctx.report.line("w", "wheels", text, failed=True)
        return
    text = (
        f"{n} wheels in .whl{fetched} resolve offline for CPython {wheels.PYTHON_VERSION} "
        "manylinux x86_64; their Requires-Dist are pinned or on the GPU machine"
    )
    ctx.report.line("w", "wheels", text)


def _probe(ctx: Context, what: str, backend: str, box: float) -> Boxed:
    s = ctx.sizes
    command = [ctx.python, "-m", "bench.gpu.probe", what, "--backbone", s.backbone]
    command += ["--size", str(s.size), "--batch", str(s.batch), "--seconds", f"{box * 0.9:.0f}"]
    command += ["--steps", str(s.steps), "--fit-batches", str(s.fit_batches)]
    command += ["--images", str(s.feature_images), "--workdir", str(ctx.workdir / "features")]
    log = ctx.workdir / f"{what}-{backend}.log"
    return run_boxed(command, ctx.child_env(backend, what), box, log)


def _verdict(f: dict[str, Any], batch: int) -> str:
    """Data time against the fit's time per batch: is the fit waiting for its input?"""
    step, data, fit = f.get("step_ms"), f.get("data_ms"), f.get("fit_ips")
    if step is None or data is None or not fit:
        return ""
    fit_ms = 1000 * batch / fit
    text = (
        f"data {data:.1f} ms/batch (adapter + copy to device) against {fit_ms:.1f} ms/batch "
        f"in fit and {step:.1f} ms for the bare step"
    )
    if data >= 0.9 * fit_ms:
        return text + ": data-bound"
    if fit_ms > 1.15 * step:
        return text + f": fit {100 * (fit_ms / step - 1):.0f} % over the bare step"
    return text + ": not data-bound"


def train_text(f: dict[str, Any], s: Any) -> str:
    jit = "jit" if f.get("jit") else "no jit"
    out = [f"{s.backbone} {s.size} px, batch {s.batch}, {f.get('policy', '?')}, {jit}"]
    if "build_s" in f:
        out.append(f"build {f['build_s']:.1f} s")
    if "compile_s" in f:
        out.append(f"compile/first step {f['compile_s']:.1f} s")
    if "step_ips" in f:
        out.append(f"steady {f['step_ips']:.0f} img/s ({f['step_ms']:.1f} ms/step)")
    if "fit_ips" in f:
        out.append(f"fit {f['fit_ips']:.0f} img/s (first fit epoch {f['fit_first_epoch_s']:.1f} s)")
    verdict = _verdict(f, s.batch)
    if "data_error" in f:
        verdict = f"data time not measured: {f['data_error']}"
    return ", ".join(out) + (f"; {verdict}" if verdict else "")


def train_part(ctx: Context, backend: str) -> None:
    """(a) Training images/s, compile apart, data time vs step time."""
    box = ctx.box("a", backend, ctx.sizes.box_train)
    if box is None:
        return
    boxed = _probe(ctx, "train", backend, box)
    suffix, failed = _cut(boxed, ctx.dry)
    ctx.report.line("a", backend, "train " + train_text(boxed.figures, ctx.sizes) + suffix, failed)


def features_text(f: dict[str, Any], s: Any) -> str:
    out = [f"{s.backbone} {s.size} px, {s.feature_images} images, {f.get('policy', '?')}"]
    if "miss_s" in f:
        out.append(
            f"cache miss {f['miss_s']:.1f} s = {f['miss_ips']:.0f} img/s "
            "(build, load weights file, extract, save)"
        )
    if "hit_s" in f:
        out.append(f"hit {f['hit_s']:.2f} s{'' if f.get('hit') else ' (NOT a hit)'}")
    if "jit_ips" in f:
        out.append(
            f"predict_on_batch {f['jit_ips']:.0f} img/s after {f['jit_compile_s']:.1f} s compile"
        )
    return ", ".join(out)


def features_part(ctx: Context, backend: str) -> None:
    """(b) Feature extraction for the cache (weights from a file), miss and hit."""
    box = ctx.box("b", backend, ctx.sizes.box_features)
    if box is None:
        return
    boxed = _probe(ctx, "features", backend, box)
    suffix, failed = _cut(boxed, ctx.dry)
    failed = failed or ("hit" in boxed.figures and not boxed.figures["hit"])
    ctx.report.line(
        "b", backend, "features " + features_text(boxed.figures, ctx.sizes) + suffix, failed
    )


def start_prep(ctx: Context, backend: str, config: Path) -> tuple[threading.Thread, list[Boxed]]:
    """The phantoms, made and decoded in the background (CPU) while (a) and (b) run."""
    s = ctx.sizes
    command = [ctx.python, "-m", "bench.gpu.prep", "--out", str(ctx.workdir / "phantoms")]
    command += ["--per-class", str(s.per_class), "--size", str(s.size), "--config", str(config)]
    env = {**ctx.env, "KERAS_BACKEND": backend}
    out: list[Boxed] = []
    box = max(ctx.left(), 1.0)

    def work() -> None:
        out.append(run_boxed(command, env, box, ctx.workdir / "prep.log"))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, out


def prep_part(ctx: Context, backend: str, thread: threading.Thread, out: list[Boxed]) -> bool:
    """Wait for the phantoms (leaving the study boxes their time); a line either way."""
    thread.join(timeout=max(ctx.left() - 2 * (ctx.sizes.box_study + ctx.sizes.grace), 1.0))
    s = ctx.sizes
    what = f"{4 * s.per_class} phantoms at {s.size} px"
    if not out:
        ctx.report.line("c", backend, f"data: {what} not ready in time: study skipped", True)
        return False
    f, (suffix, failed) = out[0].figures, _cut(out[0], True)
    synth = f.get("synth_s")
    made = "kept from an earlier run" if synth == 0 else f"synth {synth or 0:.0f} s"
    text = f"data: {what}: {made}"
    if "warm_s" in f:
        text += f", decoded {f['train']} train + {f['val']} val in {f['warm_s']:.0f} s"
    beside = " (beside (a) and (b))" if set(ctx.parts) & set("ab") else ""
    ctx.report.line("c", backend, text + beside + suffix, failed)
    return not failed


def study_part(ctx: Context, backend: str, label: str, workers: int, config: Path) -> None:
    """(c) the study's workers (one by default), (d) twice as many on the one GPU: the
    same box each ((d) is skipped when the box that (c) had no longer fits)."""
    want = ctx.study_box or ctx.sizes.box_study + ctx.sizes.grace
    box = ctx.box(label, backend, want, whole=label == "d")
    if box is None:
        return
    ctx.study_box = box
    grace = max(box - ctx.sizes.box_study, 0.0)
    plan = study.Box(label, workers, min(ctx.sizes.box_study, box), grace)
    data = ctx.workdir / "phantoms"
    env = ctx.child_env(backend, f"study-{label}")
    text, counts, boxed = study.run_box(ctx.python, plan, config, data, ctx.workdir, env)
    failed = boxed.returncode not in (0, None) and not boxed.timed_out
    if failed:
        text += f"; FAILED (exit {boxed.returncode}): {boxed.tail()}"
    if "error" in counts:
        text += f"; storage: {counts['error']}"
    failed = failed or (ctx.dry and counts["finished"] == 0)
    shared = counts.get("sharing") or {}
    # Trials of one shape share steps. On a busy machine the box may end after one trial:
    # then nothing is measured here (tests/test_bench_gpu.py measures it without a box).
    if ctx.dry and backend == "jax" and label == "c" and shared.get("ratio") is not None:
        unshared = shared["ratio"] > 0.25 or not shared["hits"]
        if unshared:
            text += "; FAILED: later same-shape trials did not reuse the first's compiled steps"
        failed = failed or unshared
    ctx.report.line(label, backend, f"study {text}", failed)
    ctx.per_hour[workers] = counts.get("per_hour", 0.0)


def ratio_line(ctx: Context, backend: str) -> None:
    rates, one, two = ctx.per_hour, ctx.workers, 2 * ctx.workers
    if one in rates and two in rates:
        ratio = rates[two] / rates[one] if rates[one] else float("nan")
        text = (
            f"{two} workers / {one} worker{'s' * (one > 1)} on one device: "
            f"{rates[two]:.0f} / {rates[one]:.0f} trials/hour = {ratio:.2f}x"
        )
        ctx.report.line("d", backend, text)


def modules_part(ctx: Context) -> None:
    """(w) Every module the dry run's jax and torch processes imported is carried or there."""
    uncovered = wheels.uncovered_modules(ctx.workdir / "modules")
    text = "modules imported by the dry run's jax/torch processes: all carried or on the GPU"
    if uncovered:
        text = f"FAILED: imported but neither carried nor on the GPU: {', '.join(uncovered)}"
    ctx.report.line("w", "modules", text, failed=bool(uncovered))


def run_all(ctx: Context) -> None:
    """Every part in order; the study's phantoms are made while the GPU parts run."""
    first = ctx.backends[0]
    if ctx.dry:
        wheel_part(ctx)
    config = study.study_config(ctx.dry, ctx.workdir / "study.yaml")
    studies = [part for part in "cd" if part in ctx.parts]
    thread, prep = start_prep(ctx, first, config) if studies else (None, [])
    if "a" in ctx.parts:
        for backend in ctx.backends:
            train_part(ctx, backend)
            ctx.save_logs()
    if "b" in ctx.parts:
        features_part(ctx, first)
        ctx.save_logs()
    if thread is not None and prep_part(ctx, first, thread, prep):
        for part in studies:
            study_part(ctx, first, part, ctx.workers * (1 if part == "c" else 2), config)
            ctx.save_logs()
        ratio_line(ctx, first)
    elif studies:
        ctx.report.line(studies[-1], first, "skipped: no phantoms", failed=True)
    if ctx.dry:
        modules_part(ctx)
