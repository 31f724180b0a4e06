"""`tumor-search report`: one self-contained HTML page, rendered in a real headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.results.evaluation import bootstrap_intervals
from tests.conftest import assert_bad_input, run_cli
from tests.search.conftest import TinyStudy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]
CONFUSION = [[18, 1, 0, 1], [2, 15, 2, 1], [0, 1, 19, 0], [0, 0, 1, 19]]
SUMMARY = re.compile(r"wrote .+: (\d+) figures?(?:, (\d+) placeholders?)?$")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The Debian `chromium` package, installed once when it is missing (CI runs as root)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing; install the Debian package `chromium` (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # stale or missing package lists
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and CHROMIUM.exists(), result.stdout[-2000:] + result.stderr
    return CHROMIUM


@dataclass
class Rendered:
    """What the browser saw: drawn plots, placeholders, errors, requests that left the file."""

    declared: int
    plots: int
    placeholders: int
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    texts: dict[str, list[str]] = field(default_factory=dict)
    images: int = 0  # <img> elements that decoded


def render(
    chromium: Path, report: Path, screenshot: Path, selectors: tuple[str, ...] = ()
) -> Rendered:
    """Open `report` offline, wait for every plot to draw, screenshot the whole page.

    Args:
        chromium: The browser executable.
        report: The HTML file.
        screenshot: Where to save a full-page PNG.
        selectors: CSS selectors whose elements' texts to return.
    """
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []

    def refuse(route: Any) -> None:
        requests.append(route.request.url)
        route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
            page.route(re.compile(r"^(?!file:)"), refuse)
            page.goto(report.as_uri(), wait_until="load")
            declared = int(page.get_attribute("body", "data-figures") or -1)
            drawn = (
                "[...document.querySelectorAll('.js-plotly-plot')]"
                ".filter(d => d.querySelector('.main-svg')).length"
            )
            page.wait_for_function(f"n => {drawn} >= n", arg=declared, timeout=30_000)
            page.wait_for_timeout(300)  # let transitions settle before the screenshot
            plots = page.evaluate(drawn)
            placeholders = page.locator(".placeholder").count()
            texts = {s: page.locator(s).all_text_contents() for s in selectors}
            images = page.evaluate(
                "[...document.querySelectorAll('img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length"
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return Rendered(declared, plots, placeholders, errors, requests, texts, images)


def report_cli(storage: str, study: str, out: Path) -> tuple[int, int]:
    """Run `report` as a user would; return the figures and placeholders it says it wrote."""
    result = run_cli("report", "--study", study, "--storage", storage, "--out", str(out))
    assert result.returncode == 0, result.stderr
    match = SUMMARY.search(result.stdout.strip())
    assert match, result.stdout
    return int(match.group(1)), int(match.group(2) or 0)


def make_study(path: Path, completed: int, pruned: int = 0, with_test_result: bool = False) -> str:
    """A tumor-search study made directly with Optuna (no training): the demo config,
    `completed` finished and `pruned` pruned trials, optionally a train-best result."""
    from search.config import load_config
    from search.results.train_best import classification_metrics

    config = load_config("demo")
    storage = f"sqlite:///{path}"
    study = optuna.create_study(study_name="fake", storage=storage, direction="maximize")
    study.set_user_attr("config", config.to_dict())
    study.set_user_attr("trials", config.trials)
    distributions = {
        "backbone": CategoricalDistribution(["small_cnn", "mobilenet_v3_small"]),
        "head_depth": IntDistribution(0, 2),
        "dropout": FloatDistribution(0.0, 0.5),
        "learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
    }
    states = [TrialState.COMPLETE] * completed
    for k in range(pruned):
        states.insert(2 * k + 1, TrialState.PRUNED)
    for i, state in enumerate(states):
        was_pruned = state == TrialState.PRUNED
        params = {
            "backbone": ("small_cnn", "mobilenet_v3_small")[i % 2],
            "head_depth": i % 3,
            "dropout": round(0.04 * i, 2),
            "learning_rate": 10 ** (-4 + 0.15 * i),
        }
        epochs = 3 if was_pruned else 7
        base = 0.2 if was_pruned else 0.3 + 0.01 * (i % 4)
        # What a finished trial measures of its model (models.footprint).
        footprint = {} if was_pruned else {"latency_ms": 1.5 + i, "params_m": 0.1, "size_mb": 0.4}
        curve = {e: base + 0.08 * e - 0.005 * e * e for e in range(epochs)}
        study.add_trial(
            create_trial(
                state=state,
                value=curve[epochs - 1] if was_pruned else max(curve.values()),
                params=params,
                distributions=distributions,
                intermediate_values=curve,
                user_attrs={
                    "trial_config": {**params, "head_width": 128, "batch_size": 32},
                    "wall_seconds": 4.0 * epochs + i,
                    **footprint,
                },
            )
        )
    if with_test_result:
        y_true = [t for t, row in enumerate(CONFUSION) for p, n in enumerate(row) for _ in range(n)]
        y_pred = [p for t, row in enumerate(CONFUSION) for p, n in enumerate(row) for _ in range(n)]
        test = classification_metrics(np.array(y_true), np.array(y_pred), CLASSES)
        calibration = _calibration(np.array(y_true), np.array(y_pred))
        study.set_user_attr(
            "train_best",
            {
                "study": "fake",
                "trial": 0,
                "classes": CLASSES,
                "test": test,
                "test_images": len(y_true),
                "test_accuracy_mean": test["accuracy"],
                "test_accuracy_std": 0.0,
                "intervals": bootstrap_intervals(CONFUSION, CLASSES),
                "calibration": calibration,
                **_gradcam_examples(path.parent / "best"),
            },
        )
    return storage


def _gradcam_examples(out_dir: Path) -> dict[str, Any]:
    """Grad-CAM overlays as train-best writes them (made-up heatmaps), and their records."""
    from search.results.explain import overlay_png

    (out_dir / "explain").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (name, kind) in enumerate((("glioma", "correct"), ("glioma", "wrong"))):
        png = f"explain/{name}_{kind}.png"
        pixels = np.full((32, 32, 3), 60 * (i + 1), np.uint8)
        (out_dir / png).write_bytes(overlay_png(pixels, np.eye(4, dtype=np.float32), name))
        records.append(
            {"class": name, "kind": kind, "predicted": name, "probability": 0.9, "png": png}
        )
    return {"out_dir": str(out_dir), "examples": records}


def _calibration(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """A calibration record as train-best writes it, for overconfident made-up logits."""
    from search.results.calibrate import fit_temperature, softmax
    from search.results.evaluation import expected_calibration_error, reliability

    rng = np.random.default_rng(0)
    logits = 8.0 * np.eye(4)[y_pred] + rng.normal(0.0, 0.5, (len(y_pred), 4))
    t = fit_temperature(logits, y_true)
    before, after = softmax(logits), softmax(logits, t)
    return {
        "temperature": t,
        "applied": True,
        "reason": "applied: 5-fold cross-validated NLL on the validation split: 0.9 -> 0.4",
        "fitted_on": "validation split (80 images)",
        "test": {
            "ece_before": expected_calibration_error(before, y_true),
            "ece_after": expected_calibration_error(after, y_true),
            "brier_before": 0.2,
            "brier_after": 0.18,
            "nll_before": 0.9,
            "nll_after": 0.41,
        },
        "reliability": {"before": reliability(before, y_true), "after": reliability(after, y_true)},
    }


@pytest.mark.backends
def test_report_of_a_finished_study_renders_offline_in_chromium(
    tiny_study: TinyStudy, chromium: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    drawn, placeholders = report_cli(tiny_study.storage, tiny_study.name, out)
    # History, learning curves, parallel coordinates, per backbone, duration and latency
    # always draw; importances may not (three tiny trials can score the same). This copy of
    # the study has no held-out result (test_report_shows_the_held_out_test_result has one).
    assert drawn + placeholders == 7 and drawn >= 6, (drawn, placeholders)
    page = out.read_text()
    assert page.count('class="plotly-graph-div"') == drawn
    assert "<script src" not in page

    seen = render(chromium, out, tmp_path / "report.png")
    assert seen.errors == []
    assert seen.requests == [], "the report must open offline"
    assert seen.declared == seen.plots == drawn
    assert seen.placeholders == placeholders
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_report_shows_the_held_out_test_result(chromium: Path, tmp_path: Path) -> None:
    storage = make_study(tmp_path / "fake.db", completed=6, pruned=3, with_test_result=True)
    out = tmp_path / "report.html"
    assert report_cli(storage, "fake", out) == (9, 0)

    seen = render(
        chromium,
        out,
        tmp_path / "report.png",
        selectors=(".per-class th, .per-class td", ".legendtext", "h3", ".intervals tr"),
    )
    assert seen.errors == [] and seen.requests == []
    assert seen.plots == 9
    cells = seen.texts[".per-class th, .per-class td"]
    rows = [cells[i : i + 5] for i in range(0, len(cells), 5)]
    assert [r[0] for r in rows] == ["class", *CLASSES]
    assert rows[1][1:] == ["0.9", "0.9", "0.9", "20"]  # glioma: 18 of 20 right, 18 of 20 said
    assert "pruned trials" in seen.texts[".legendtext"]
    assert "Confusion matrix on the held-out test split" in seen.texts["h3"]
    assert "Reliability diagram on the held-out test split" in seen.texts["h3"]
    assert "Latency per image against the metric" in seen.texts["h3"]
    assert "front (nothing both faster and better)" in seen.texts[".legendtext"]
    assert "perfectly calibrated" in seen.texts[".legendtext"]
    assert seen.images == 2  # the Grad-CAM panel's overlays, embedded, drawn by the browser
    assert any(t.startswith("before calibration (ECE") for t in seen.texts[".legendtext"])
    ci = bootstrap_intervals(CONFUSION, CLASSES)
    rows = seen.texts[".intervals tr"]  # a row's cells' texts, run together
    low, high = ci["accuracy"]["lower"], ci["accuracy"]["upper"]
    assert f"accuracy0.8875{low:.4f} to {high:.4f}" in rows
    assert any(r.startswith("glioma0.9") for r in rows)  # sensitivity: 18 of 20
    page = out.read_text()
    assert '"type":"heatmap"' in page and "[[18,1,0,1],[2,15,2,1]" in page
    assert "5-fold cross-validated NLL on the validation split" in page
    assert "NLL 0.9000 &rarr; 0.4100" in page


@pytest.mark.backends
def test_report_of_a_one_trial_study_has_placeholders(tmp_path: Path) -> None:
    storage = make_study(tmp_path / "one.db", completed=1)
    out = tmp_path / "report.html"
    assert report_cli(storage, "fake", out) == (6, 1)
    page = out.read_text()
    assert page.count('class="plotly-graph-div"') == 6
    assert re.search(r'class="placeholder">needs at least 2 completed trials', page)
    assert "Confusion matrix" not in page


def test_report_of_an_empty_study_is_all_placeholders(tmp_path: Path) -> None:
    from search.results.report import write_report

    storage = make_study(tmp_path / "empty.db", completed=0)
    out = tmp_path / "report.html"
    assert write_report("fake", storage, out) == "0 figures, 7 placeholders"
    assert "No completed trial yet." in out.read_text()


def test_report_on_a_missing_study_is_bad_input(tmp_path: Path) -> None:
    storage = make_study(tmp_path / "studies.db", completed=1)
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    result = run_cli("report", "--study", "nope", "--storage", storage, "--out", str(out))
    assert_bad_input(result, "'nope' not found", "fake")
    assert list(out.parent.iterdir()) == []
