"""The Kubernetes manifests in deploy/k8s are valid and agree with docker-compose and the CLI.

Every manifest passes `kubernetes-validate --strict` (bundled JSON schemas; no cluster, no
network), and what a deployment relies on is checked: our image runs real `tumor-search`
commands with flags they accept, the storage URL comes from the Secret that the README
creates, workers hold one GPU each and read the dataset read-only, the images are those of
docker-compose.yml, and the dashboard is reached through a ClusterIP Service only.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.cli import build_parser
from tests.conftest import ROOT, run_cli

K8S_DIR = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # bundled by kubernetes-validate==1.37.0 (the test extra)
SECRET = "tumor-search-db"
OUR_IMAGE = "tumor-search"  # the image name in docker-compose.yml, without its tag
POD_KINDS = {"Pod": (), "Job": ("template",), "Deployment": ("template",)}
POD_KINDS["StatefulSet"] = ("template",)
VARIABLE = re.compile(r"\$\((\w+)\)")
OUR_CONTAINERS = ("study-create/study-create", "workers/study-create", "workers/worker")
DASHBOARD = "dashboard/dashboard"


def _manifests() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    """`kubernetes-validate --strict -k VERSION PATHS...` from the test extras."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.fail(
            "kubernetes-validate is missing: install the test extras (pip install -e '.[test]')"
        )
    from kubernetes_validate.utils import all_versions

    assert KUBERNETES_VERSION in all_versions(), "pin a Kubernetes version the package bundles"
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION]
    return subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, timeout=60)


@cache
def _documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(
        (path.name, doc)
        for path in _manifests()
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def _named(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    for key in POD_KINDS[doc["kind"]]:
        spec = spec[key]
    return spec if doc["kind"] == "Pod" else spec["spec"]


def _containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload/container, container, its pod spec) for every container and init container."""
    found = []
    for _, doc in _documents():
        if doc["kind"] in POD_KINDS:
            pod = _pod_spec(doc)
            for container in pod.get("initContainers", []) + pod["containers"]:
                found.append((f"{doc['metadata']['name']}/{container['name']}", container, pod))
    return found


def _ours() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [c for c in _containers() if c[1]["image"].split(":")[0] == OUR_IMAGE]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def test_every_manifest_passes_strict_validation() -> None:
    result = _validate(_manifests())
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if not line.startswith("INFO")], result.stdout
    # An unknown kind only warns and passes: every document must have been really checked.
    assert len([line for line in lines if " passed " in line]) == len(_documents())


def test_a_misspelt_field_fails_strict_validation(tmp_path: Path) -> None:
    workers = (K8S_DIR / "workers.yaml").read_text()
    typos = {"spec.yaml": ("parallelism:", "paralelism:"), "mount.yaml": ("readOnly:", "readonly:")}
    for name, (right, wrong) in typos.items():
        assert right in workers
        (tmp_path / name).write_text(workers.replace(right, wrong, 1))
    result = _validate(sorted(tmp_path.iterdir()))
    assert result.returncode != 0, result.stdout
    for name in typos:
        assert re.search(rf"^ERROR \S*{name} did not validate", result.stdout, re.M), result.stdout


def test_kustomization_lists_the_manifests_and_our_image() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    resources = {p.split("#")[0].strip() for p in kustomization["resources"]}
    # The dataset's volume and its loader are applied by hand, before (README.md, step 3).
    assert resources == {p.name for p in _manifests()} - {"data-pvc.yaml", "data-loader.yaml"}
    assert [image["name"] for image in kustomization["images"]] == [OUR_IMAGE]
    assert not [d for _, d in _documents() if d["kind"] in ("Secret", "Namespace")]


def test_images_are_those_of_docker_compose() -> None:
    services = _compose()["services"]
    expected = {
        "worker": services["worker"]["image"],
        "study-create": services["init"]["image"],
        "postgres": services["postgres"]["image"],
        "dashboard": services["dashboard"]["image"],
    }
    assert services["worker"]["image"].split(":")[0] == OUR_IMAGE
    for name, container, _ in _containers():
        if name != "data-loader/loader":
            assert container["image"] == expected[name.split("/")[1]], name
    assert {name for name, _, _ in _ours()} == {*OUR_CONTAINERS, DASHBOARD}


def test_study_settings_match_the_compose_defaults() -> None:
    env_example = _env_example()
    data = _named("ConfigMap", "tumor-search-study")["data"]
    assert data == {key: env_example[key] for key in ("STUDY", "STUDY_CONFIG")}


def _argv(name: str, container: dict[str, Any]) -> list[str]:
    """The container's arguments with each `$(VAR)` replaced by a value it would have."""
    assert "command" not in container, f"{name}: the image's ENTRYPOINT is tumor-search"
    study = _named("ConfigMap", "tumor-search-study")["data"]
    env = _env(container)
    argv = []
    for arg in container["args"]:
        for var in VARIABLE.findall(arg):
            assert var in env, f"{name}: $({var}) is not in the container's env"
            ref = env[var]["valueFrom"]
            if "configMapKeyRef" in ref:
                value = study[ref["configMapKeyRef"]["key"]]
            else:
                value = "postgresql+psycopg2://u:p@postgres:5432/optuna"
            arg = arg.replace(f"$({var})", value)
        argv.append(arg)
    return argv


@cache
def _help(*words: str) -> str:
    result = run_cli(*words, "--help", timeout=60)
    assert result.returncode == 0, (words, result.stderr)
    return result.stdout


def _parsed(name: str) -> list[str]:
    """The container's argv, checked to be a command the CLI accepts as it is written."""
    container = next(c for n, c, _ in _ours() if n == name)
    argv = _argv(name, container)
    try:
        parsed = build_parser().parse_args(argv)
    except SystemExit as exc:  # the CLI's own parser refused these arguments
        pytest.fail(f"{name}: `tumor-search {' '.join(argv)}` is refused ({exc.code})")
    assert callable(parsed.handler)
    words = argv[: next(i for i, a in enumerate(argv) if a.startswith("-"))]
    for option in (a for a in argv if a.startswith("--")):  # no abbreviations either
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", _help(*words)), option
    return argv


@pytest.mark.parametrize("name", OUR_CONTAINERS)
def test_our_containers_run_real_cli_commands(name: str) -> None:
    argv = _parsed(name)
    assert argv[argv.index("--data") + 1] == "/data"
    compose = _compose()["services"]["worker" if name.endswith("worker") else "init"]["command"]
    assert [a for a in argv if a.startswith("-")] == [a for a in compose if a.startswith("-")]


def test_the_storage_url_comes_from_the_secret() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    assert f"kubectl -n tumor-search create secret generic {SECRET}" in readme
    refs = 0
    for name, container, _ in _containers():
        for var in _env(container).values():
            if "valueFrom" not in var:
                assert not re.search(r"(?i)postgres(ql)?(\+\w+)?://|password", var["value"]), name
                continue
            ref = var["valueFrom"].get("secretKeyRef")
            if ref:
                refs += 1
                assert ref["name"] == SECRET, name
                assert f"--from-literal={ref['key']}=" in readme, (name, ref["key"])
        storage = [a for a in container.get("args", []) if "://" in a]
        assert not storage, f"{name}: a literal storage URL {storage}"
    assert refs == len(_containers()) - 1  # every container but the data loader
    text = "\n".join(p.read_text() for p in K8S_DIR.iterdir())
    assert "change-me" not in text and not re.search(r"://\w+:\w+@", text.replace("$PW", ""))
    dashboard = _named("Deployment", "dashboard")["spec"]["template"]["spec"]["containers"][0]
    assert dashboard["args"][:3] == ["dashboard", "--storage", "$(OPTUNA_STORAGE)"]
    assert "secretKeyRef" in _env(dashboard)["OPTUNA_STORAGE"]["valueFrom"]


def test_the_dashboard_serves_the_cluster_read_only() -> None:
    """Any pod of the cluster reaches a ClusterIP: no login (port-forward is the way in), so
    no changes either; otherwise the compose dashboard's flags."""
    argv = _parsed(DASHBOARD)
    assert "--read-only" in argv and "--allow-edits" not in argv
    compose = _compose()["services"]["dashboard"]["command"]
    flags = [a for a in compose if a.startswith("-") and a != "--allow-edits"]
    assert [a for a in argv if a.startswith("-") and a != "--read-only"] == flags


def _data_mounts(container: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, Any]]:
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == "tumor-search-data"
    }
    mounts = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert all(claims[m["name"]].get("readOnly") is True for m in mounts)
    return mounts


def test_workers_are_an_indexed_job_with_one_gpu_each() -> None:
    job = _named("Job", "workers")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] >= 1
    worker = next(c for n, c, _ in _ours() if n == "workers/worker")
    for section in ("requests", "limits"):
        assert str(worker["resources"][section]["nvidia.com/gpu"]) == "1", section


@pytest.mark.parametrize("name", OUR_CONTAINERS)
def test_our_containers_read_the_data_read_only(name: str) -> None:
    container, pod = next((c, p) for n, c, p in _ours() if n == name)
    mounts = _data_mounts(container, pod)
    assert [(m["mountPath"], m.get("readOnly")) for m in mounts] == [("/data", True)]


def test_pods_run_as_non_root_with_requests_and_limits() -> None:
    for name, container, pod in _containers():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][section]), (name, section)
        assert not [p for p in container.get("ports", []) if "hostPort" in p], name


def test_the_dashboard_is_reached_through_a_cluster_ip_service() -> None:
    services = [d for _, d in _documents() if d["kind"] == "Service"]
    assert {s["metadata"]["name"]: s["spec"].get("type", "ClusterIP") for s in services} == {
        "dashboard": "ClusterIP",
        "postgres": "ClusterIP",
    }
    dashboard = _named("Service", "dashboard")
    assert dashboard["spec"]["type"] == "ClusterIP"
    labels = _named("Deployment", "dashboard")["spec"]["template"]["metadata"]["labels"]
    assert dashboard["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in dashboard["spec"]["ports"]] == [8080]
    readme = (K8S_DIR / "README.md").read_text()
    assert "kubectl -n tumor-search port-forward svc/dashboard 8080:8080" in readme
    postgres = _named("Service", "postgres")  # the host and port of the README's storage URL
    assert [p["port"] for p in postgres["spec"]["ports"]] == [5432]
    assert "@postgres:5432/" in readme
