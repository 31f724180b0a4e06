"""optuna-dashboard in a real browser (Chromium through Playwright): a trial's Artifacts panel
shows its learning curves, a read-only dashboard keeps a study its UI tries to delete, and
with --auth no page opens without the login."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bcrypt
import optuna

from tests.conftest import run_cli
from tests.search.helpers import serve_dashboard, write_config
from tests.search.test_report import CHROMIUM_ARGS, chromium  # noqa: F401 - the fixture

PASSWORD = "open sesame"


def _study_with_artifacts(tmp_path: Path, tiny_data: Path) -> str:
    config = write_config(tmp_path / "c.yaml", trials=1, pruner={"name": "none"})
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    result = run_cli("run", "--config", str(config), "--data", str(tiny_data), "--storage", storage)
    assert result.returncode == 0, result.stderr
    return storage


def test_a_trials_artifacts_panel_shows_its_learning_curves(
    tmp_path: Path,
    tiny_data: Path,
    chromium: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import sync_playwright

    storage = _study_with_artifacts(tmp_path, tiny_data)
    study_id = optuna.get_all_study_summaries(storage)[0]._study_id
    with serve_dashboard(storage) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{base}/dashboard/studies/{study_id}/trials", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).wait_for(timeout=30_000)
            drawn = (
                "[...document.querySelectorAll('img')].filter(i => i.src.includes('/artifacts/')"
                " && i.complete && i.naturalWidth > 0).map(i => i.naturalWidth)"
            )
            page.wait_for_function(f"{drawn}.length >= 2", timeout=30_000)
            widths = page.evaluate(drawn)
            names = page.locator("text=learning_curves.png").count()
            page.screenshot(path=str(tmp_path / "artifacts.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(widths) == [410, 820]  # the confusion matrix and the learning curves
    assert names >= 1


def test_deleting_a_study_in_a_read_only_dashboard_fails_and_it_stays(
    tmp_path: Path,
    chromium: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import sync_playwright

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    optuna.create_study(study_name="kept", storage=storage)
    refused: list[int] = []
    with serve_dashboard(storage, "--read-only") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on(
                "response",
                lambda r: refused.append(r.status) if r.request.method == "DELETE" else None,
            )
            page.goto(f"{base}/dashboard", wait_until="networkidle")
            page.get_by_label("delete study").click()
            page.get_by_role("button", name="YES").click()
            page.wait_for_timeout(1500)
        finally:
            browser.close()
    assert refused == [403]
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["kept"]


def _refused(page: Any, url: str) -> bool:
    """Whether the browser was refused `url`: a 401, or (headless Chromium, which cannot ask
    for a login) the navigation failing on the credentials."""
    from playwright.sync_api import Error

    try:
        response = page.goto(url)
    except Error as exc:
        return "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    return response is not None and response.status == 401


def test_with_auth_no_page_opens_without_the_login(tmp_path: Path, chromium: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    storage = f"sqlite:///{tmp_path / 'a.db'}"
    optuna.create_study(study_name="private", storage=storage)
    users = tmp_path / "users"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"clinician:{hashed}\n")
    args = ("--host", "0.0.0.0", "--auth", str(users))
    with serve_dashboard(storage, *args) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            for credentials in (None, {"username": "clinician", "password": "guess"}):
                page = browser.new_context(http_credentials=credentials).new_page()
                for path in ("/dashboard", "/api/studies"):
                    assert _refused(page, base + path)
                answer = page.request.get(f"{base}/api/studies")
                assert answer.status == 401 and "private" not in answer.text()
            context = browser.new_context(
                http_credentials={"username": "clinician", "password": PASSWORD}
            )
            page = context.new_page()
            response = page.goto(f"{base}/dashboard", wait_until="networkidle")
            assert response is not None and response.status == 200
            page.get_by_text("private").first.wait_for(timeout=30_000)
        finally:
            browser.close()
