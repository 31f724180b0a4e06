"""Each trial's learning curves and validation confusion matrix in Optuna's artifact store,
recorded on the study and served by optuna-dashboard; an unusable store never fails a trial."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import optuna
from optuna.trial import TrialState
from PIL import Image

from search.runtime.artifacts import ARTIFACTS_ATTR
from tests.conftest import run_cli
from tests.search.helpers import dashboard_study, serve_dashboard, write_config


def _run(tmp_path: Path, tiny_data: Path, *extra: str) -> tuple[str, optuna.Study, str]:
    config = write_config(tmp_path / "c.yaml", trials=2, pruner={"name": "none"})
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    result = run_cli(
        "run", "--config", str(config), "--data", str(tiny_data), "--storage", storage, *extra
    )
    assert result.returncode == 0, result.stderr
    return storage, optuna.load_study(study_name="tiny", storage=storage), result.stderr


def test_every_trial_uploads_its_curves_and_confusion_matrix(
    tmp_path: Path, tiny_data: Path
) -> None:
    storage, study, _ = _run(tmp_path, tiny_data)
    folder = Path(study.user_attrs[ARTIFACTS_ATTR])
    assert folder == tmp_path / "a-artifacts" and folder.is_dir()
    store = optuna.artifacts.FileSystemArtifactStore(str(folder))
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 2
    for trial in trials:
        metas = {
            m.filename: m
            for m in optuna.artifacts.get_all_artifact_meta(
                trial, storage=optuna.storages.get_storage(storage)
            )
        }
        assert set(metas) == {"learning_curves.json", "learning_curves.png", "confusion_val.png"}
        with store.open_reader(metas["learning_curves.json"].artifact_id) as reader:
            assert json.loads(reader.read()) == trial.user_attrs["history"]
        for name in ("learning_curves.png", "confusion_val.png"):
            assert metas[name].mimetype == "image/png"
            with store.open_reader(metas[name].artifact_id) as reader:
                image = Image.open(io.BytesIO(reader.read()))
                assert image.format == "PNG" and image.width > 200

    with serve_dashboard(storage) as base:  # what a trial's Artifacts panel loads
        detail = dashboard_study(base, "tiny")
        served = detail["trials"][0]["artifacts"]
        assert {a["filename"] for a in served} == {
            "learning_curves.json",
            "learning_curves.png",
            "confusion_val.png",
        }
        png = next(a for a in served if a["filename"] == "learning_curves.png")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        study_id, trial_id = detail["trials"][0]["study_id"], detail["trials"][0]["trial_id"]
        url = f"{base}/artifacts/{study_id}/{trial_id}/{png['artifact_id']}"
        with opener.open(url, timeout=10) as response:
            assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unusable_store_is_one_line_and_the_trials_complete(
    tmp_path: Path, tiny_data: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    _, study, stderr = _run(tmp_path, tiny_data, "--artifacts", str(blocked / "store"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    lines = [line for line in stderr.splitlines() if line.startswith("artifacts:")]
    assert len(lines) == 1 and "going on without them" in lines[0], lines


def test_a_dashboard_started_before_the_folder_exists_serves_later_uploads(
    tmp_path: Path,
) -> None:
    """As in docker-compose: the dashboard sees the cache volume read-only and may start
    before any trial made the folder; it must neither make it nor give up on it."""
    from search.runtime.artifacts import open_store, upload

    storage = f"sqlite:///{tmp_path / 'd.db'}"
    study = optuna.create_study(study_name="early", storage=storage)
    folder = tmp_path / "volume" / "artifacts"
    study.set_user_attr(ARTIFACTS_ATTR, str(folder))
    with serve_dashboard(storage) as base:
        assert not folder.exists()
        trial = study.ask()
        assert upload(open_store(folder), trial, "notes.txt", b"uploaded later", "text/plain")
        study.tell(trial, 1.0)
        served = dashboard_study(base, "early")["trials"][0]
        [artifact] = served["artifacts"]
        url = (
            f"{base}/artifacts/{served['study_id']}/{served['trial_id']}/{artifact['artifact_id']}"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as response:
            assert response.read() == b"uploaded later"
