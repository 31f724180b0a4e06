"""The code stays ruff-clean: CI fails on a lint error like on a failing test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_ruff_check_passes() -> None:
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    result = subprocess.run(
        [ruff, "check", "search", "models", "data", "common", "tests", "bench", "predictor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_imports_without_tensorflow_for_light_commands() -> None:
    """`data` commands and `--help` answer fast: they must not import TensorFlow."""
    code = (
        "import sys; import search.cli, data, search.cli.data; "
        "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_bench_scripts_do_not_shadow_the_packages() -> None:
    """`python bench/X.py` puts bench/ first on sys.path: a bench module named like one of
    the project's packages would hide it (bench/common.py once hid `common`)."""
    packages = {"search", "models", "data", "common"}
    assert not {p.stem for p in (ROOT / "bench").glob("*.py")} & packages


# Optuna's private API: a private module or name under optuna, or a private attribute of a
# study, trial or storage object (the names the service has used).
OPTUNA_PRIVATE = re.compile(
    r"optuna(\.\w+)*\._\w+"
    r"|\b(study|trial|frozen|storage|cached|inner|best|landed\[0\])\._[a-z]\w*"
    r"|\b_(study_id|trial_id|backend|storage|cached_frozen_trial|CachedStorage|create_new_trial"
    r"|create_scoped_session)\b"
)


def optuna_private_uses(root: Path) -> list[str]:
    """`path:line: text` of each use of Optuna's private API under the packages, outside
    search/runtime/optuna_compat.py (the one place allowed to touch it)."""
    allowed = root / "search" / "runtime" / "optuna_compat.py"
    found = []
    for package in ("search", "models", "data", "common"):
        for path in sorted((root / package).rglob("*.py")):
            if path == allowed:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if OPTUNA_PRIVATE.search(line):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_optuna_private_names_only_in_optuna_compat(tmp_path: Path) -> None:
    assert optuna_private_uses(ROOT) == []
    # The check has teeth: each way the service once reached Optuna's internals is caught.
    module = tmp_path / "search" / "runtime" / "claim.py"
    module.parent.mkdir(parents=True)
    samples = [
        "storage.maintain(study._study_id, stale)",
        "return landed[0]._trial_id",
        "cached._backend = wrap(rdb(cached))",
        "study._storage = RetryingStorage(cached, outage)",
        "from optuna.storages._grpc.servicer import OptunaStorageProxyService",
        "storage = optuna.storages._CachedStorage(open_storage(url))",
        'if name == "_create_new_trial":',
    ]
    module.write_text("\n".join(samples) + "\n")
    assert len(optuna_private_uses(tmp_path)) == len(samples)


def test_import_contracts_hold() -> None:
    """.importlinter's layers and no cycles among sibling modules (`make lint` runs it too)."""
    linter = shutil.which("lint-imports") or str(ROOT / ".venv" / "bin" / "lint-imports")
    result = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout
