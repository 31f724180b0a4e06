"""The bad-input catalogue: one line on stderr, exit code 2, no traceback, nothing changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import optuna
import pytest

from tests.conftest import assert_bad_input, run_cli
from tests.data.helpers import make_classes, truncated_jpeg
from tests.search.conftest import TinyStudy
from tests.search.helpers import write_config


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith((".db-wal", ".db-shm", ".lock"))
    }


def _studies(storage: str) -> dict[str, int]:
    return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> tuple[Path, str, Path]:
    """A folder with a study database holding one study, and a copy of its data (shared by
    the cases, each of which writes only files of its own)."""
    tmp_path = tmp_path_factory.mktemp("workspace")
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    config = write_config(tmp_path / "good.yaml")
    created = run_cli(
        "study",
        "create",
        "--study",
        "existing",
        "--config",
        str(config),
        "--data",
        str(data),
        "--storage",
        storage,
    )
    assert created.returncode == 0, created.stderr
    return tmp_path, storage, data


def _bad_data(kind: str, root: Path) -> Path:
    target = root / f"bad-{kind}"
    if kind == "empty":
        target.mkdir()
    elif kind == "single_class":
        make_classes(target, ["glioma"], 3)
    elif kind == "unreadable_class":
        make_classes(target, ["glioma", "pituitary"], 3)
        truncated_jpeg(target / "meningioma" / "a.jpg", seed=1)
        (target / "meningioma" / "b.jpg").write_bytes(b"")
    return target


CASES = {
    "data folder missing": (lambda ws: ["--data", str(ws / "no-such-folder")], None, ["not found"]),
    "data folder empty": (
        lambda ws: ["--data", str(_bad_data("empty", ws))],
        None,
        ["no class folders"],
    ),
    "a single class": (
        lambda ws: ["--data", str(_bad_data("single_class", ws))],
        None,
        ["at least 2 classes"],
    ),
    "a class with no readable image": (
        lambda ws: ["--data", str(_bad_data("unreadable_class", ws))],
        None,
        ["no readable image"],
    ),
    "YAML syntax error": (None, "name: x\nspace: [unclosed\n", ["YAML syntax error at line"]),
    "unknown key": (
        None,
        {"space": {"backbone": ["small_cnn"], "fine_tune": [1.0]}, "epochz": 3},
        ["unknown key epochz"],
    ),
    "dropout 1.5": (None, {"space_dropout": 1.5}, ["space.dropout", "1.5"]),
    "learning rate 0": (None, {"space_learning_rate": 0.0}, ["space.learning_rate", "positive"]),
    "unknown backbone": (
        None,
        {"space_backbone": ["resnet9000"]},
        ["unknown backbone 'resnet9000'", "small_cnn", "efficientnet_b0"],
    ),
    "input below minimum": (None, {"space_backbone": ["inception_v3"]}, ["75px"]),
}


def _config_for(case: object, ws: Path, name: str) -> Path:
    path = ws / f"{name.replace(' ', '-')}.yaml"
    if isinstance(case, str):
        path.write_text(case)
        return path
    assert isinstance(case, dict)
    if "epochz" in case:
        import yaml

        path.write_text(yaml.safe_dump(case))
        return path
    space = {
        key[len("space_") :]: ([value] if key == "space_backbone" else value)
        for key, value in case.items()
    }
    if "backbone" in space:
        space["backbone"] = case["space_backbone"]
    return write_config(path, space=space)


@pytest.mark.parametrize("case", list(CASES))
def test_study_create_refuses(case: str, workspace: tuple[Path, str, Path]) -> None:
    ws, storage, data = workspace
    data_args, config_case, fragments = CASES[case]
    config = (
        _config_for(config_case, ws, case)
        if config_case is not None
        else write_config(ws / "ok.yaml")
    )
    before_db, before_studies = _snapshot(ws), _studies(storage)
    extra = data_args(ws) if data_args else ["--data", str(data)]
    result = run_cli(
        "study", "create", "--study", "new", "--config", str(config), "--storage", storage, *extra
    )
    assert_bad_input(result, *fragments)
    assert _studies(storage) == before_studies
    after = _snapshot(ws)
    assert {k: v for k, v in after.items() if k in before_db} == before_db


def test_malformed_storage_url(workspace: tuple[Path, str, Path]) -> None:
    assert_bad_input(
        run_cli("status", "--study", "existing", "--storage", "sqlite-ish:/// nope"), "storage"
    )


def test_unreachable_postgres_hides_the_password() -> None:
    result = run_cli(
        "status",
        "--study",
        "x",
        "--storage",
        "postgresql+psycopg2://alice:topsecret@127.0.0.1:1/db",
    )
    assert_bad_input(result, "cannot open storage", "alice:***@")
    assert "topsecret" not in result.stderr + result.stdout


def test_study_that_does_not_exist(workspace: tuple[Path, str, Path]) -> None:
    _, storage, data = workspace
    assert_bad_input(
        run_cli("status", "--study", "nope", "--storage", storage),
        "study 'nope' not found",
        "existing",
    )
    assert_bad_input(
        run_cli("worker", "--study", "nope", "--storage", storage, "--data", str(data)), "not found"
    )
    assert_bad_input(run_cli("export", "--study", "nope", "--storage", storage), "not found")


def test_worker_with_different_data_refuses_to_start(workspace: tuple[Path, str, Path]) -> None:
    ws, storage, data = workspace
    other = ws / "other-copy"
    shutil.copytree(data, other)
    victim = next((other / "Training" / "glioma_tumor").iterdir())
    victim.write_bytes((other / "Training" / "no_tumor" / "image(1).jpg").read_bytes())
    before = _studies(storage)
    result = run_cli("worker", "--study", "existing", "--storage", storage, "--data", str(other))
    assert_bad_input(result, "does not match study 'existing'", "fingerprint")
    assert _studies(storage) == before


@pytest.mark.parametrize(
    "content",
    [
        None,
        "{not json",
        json.dumps({"format": "something else"}),
        json.dumps({"format": "tumor-search/best/v1"}),
    ],
)
def test_best_json_missing_or_malformed(tmp_path: Path, content: str | None) -> None:
    best = tmp_path / "best.json"
    if content is not None:
        best.write_text(content)
    out = tmp_path / "out"
    result = run_cli("train-best", "--config", str(best), "--out", str(out))
    assert_bad_input(result, "best.json")
    assert not out.exists()


def test_out_paths_that_cannot_be_written(tiny_study: TinyStudy, tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "best.json"
    assert_bad_input(
        run_cli(
            "export", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(missing_dir)
        ),
        "does not exist",
    )
    assert_bad_input(
        run_cli(
            "export", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(tmp_path)
        ),
        "is a folder",
    )
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    best = tmp_path / "best.json"
    assert (
        run_cli(
            "export", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(best)
        ).returncode
        == 0
    )
    train_best = ("train-best", "--config", str(best), "--data", str(tiny_study.data), "--out")
    for out in (a_file, a_file / "sub" / "run"):  # a file, and a folder below a file
        assert_bad_input(run_cli(*train_best, str(out)), "is not a folder")
    assert_bad_input(
        run_cli(
            "report", "--study", "tiny", "--storage", tiny_study.storage, "--out", str(missing_dir)
        ),
        "does not exist",
    )
    assert a_file.read_text() == "x"


def test_predict_refuses_a_model_that_needs_unsafe_code(tmp_path: Path) -> None:
    from models.backend import keras_module

    keras = keras_module()
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    image = tmp_path / "x.png"
    from tests.data.helpers import write_image

    write_image(image, seed=1)
    assert_bad_input(run_cli("predict", "--model", str(path), str(image)), "cannot load model")
    assert_bad_input(
        run_cli("predict", "--model", str(tmp_path / "none.keras"), str(image)), "not found"
    )
