"""The wheels the GPU machine lacks: downloaded here into .whl/, checked offline.

    python -m bench.gpu.wheels download   # what `make gpu-wheels` runs
    python -m bench.gpu.wheels check      # resolve .whl/ offline for CPython 3.12 manylinux

The GPU machine has Python 3.12 and no network; bench/gpu/check installs .whl/*.whl there
with ``--no-deps``. So the check here proves three things: every pin has a wheel for that
platform (pip's offline dry run), every wheel's Requires-Dist is a pin or already on the
machine (`DEVICE_HAS` and what those need), and every module the dry run's processes
imported comes from one of the two (`uncovered_modules`).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".whl"
PINS = ROOT / "bench" / "gpu" / "wheels.txt"
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# What the GPU image has (the device tool's README), by distribution name.
DEVICE_HAS = [
    "numpy",
    "pillow",
    "h5py",
    "ml-dtypes",
    "rich",
    "pyyaml",
    "tqdm",
    "scikit-learn",
    "scipy",
    "pandas",
    "onnxruntime",
    "torch",
    "jax",
    "jaxlib",
    "absl-py",
    "packaging",
    "psutil",
    "nvidia-ml-py",
]
# Imported here but optional where imported (a try/except around the import): requests
# and its kin by keras.callbacks.RemoteMonitor, flatbuffers by jax's export serialisation,
# optuna-dashboard (and its bottle) by the study's dashboard note; the `backports`
# namespace by urllib3's probe for backports.zstd (here it exists: backports-strenum comes
# with ai-edge-litert, the `export` extra, which the GPU machine does not need).
OPTIONAL_MODULES = frozenset(
    ["requests", "urllib3", "certifi", "idna", "charset_normalizer", "flatbuffers"]
    + ["optuna_dashboard", "bottle", "backports"]
)

# Our own code: the GPU machine runs it from the checkout (bench/gpu/check's PYTHONPATH).
OWN_DISTRIBUTIONS = frozenset({"tumor-search", "tumor-search-predict"})


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    """wheels.txt as {normalised name: version}."""
    out = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            out[norm(name)] = ver.strip()
    return out


def wheel_files() -> dict[str, tuple[str, Path]]:
    """.whl/ as {normalised name: (version, file)}."""
    out = {}
    for path in sorted(WHEELS.glob("*.whl")):
        name, ver = path.name.split("-")[:2]
        out[norm(name)] = (ver, path)
    return out


def missing() -> list[str]:
    """Pins without their wheel in .whl/."""
    have = wheel_files()
    return [f"{n}=={v}" for n, v in pins().items() if have.get(n, ("", None))[0] != v]


def _platform_args() -> list[str]:
    args = ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:"]
    for tag in PLATFORMS:
        args += ["--platform", tag]
    return args


def download() -> None:
    """Fetch the pinned wheels into .whl/ and drop any other version of them there."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *_platform_args()]
    subprocess.run([*command, "-d", str(WHEELS), "-r", str(PINS)], check=True)
    wanted = pins()
    for path in WHEELS.glob("*.whl"):
        name, ver = path.name.split("-")[:2]
        if wanted.get(norm(name)) != ver:
            path.unlink()


def resolve_offline() -> str:
    """pip's offline dry run of the pins from .whl/ for CPython 3.12 manylinux; '' when fine,
    else pip's last lines."""
    with tempfile.TemporaryDirectory() as target:
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps"]
        command += ["--find-links", str(WHEELS), *_platform_args(), "--target", target]
        proc = subprocess.run([*command, "-r", str(PINS)], capture_output=True, text=True)
    if proc.returncode == 0:
        return ""
    return " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])


def _requires(lines: list[str]) -> list[Requirement]:
    """The requirements (Requires-Dist values) that apply on the GPU machine, no extras."""
    env = {**default_environment(), "python_version": PYTHON_VERSION, "extra": ""}
    env.update(python_full_version=f"{PYTHON_VERSION}.0", sys_platform="linux")
    env.update(platform_system="Linux", platform_machine="x86_64", implementation_name="cpython")
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out.append(req)
    return out


def device_closure() -> set[str]:
    """DEVICE_HAS and, transitively, what those need (read from this machine's installs)."""
    seen, todo = set(), [norm(n) for n in DEVICE_HAS]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [norm(req.name) for req in _requires(requires)]
    return seen


def unmet_requirements() -> list[str]:
    """Requires-Dist of the carried wheels that are neither pinned nor on the GPU machine."""
    known = set(pins()) | device_closure()
    out = []
    for name, (_, path) in wheel_files().items():
        with zipfile.ZipFile(path) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            lines = archive.read(meta).decode().splitlines()
            values = [x.split(":", 1)[1].strip() for x in lines if x.startswith("Requires-Dist:")]
            for req in _requires(values):
                if norm(req.name) not in known:
                    out.append(f"{name} needs {req.name}")
    return sorted(set(out))


def uncovered_modules(folder: Path) -> list[str]:
    """Top-level modules imported by the dry run's processes (the ``modules-*.txt`` files
    that bench/gpu/sitecustom writes) whose distribution is neither pinned nor on the GPU
    machine. TensorFlow processes are left out: the GPU machine runs JAX and torch."""
    known = set(pins()) | device_closure()
    dists = importlib.metadata.packages_distributions()
    out = set()
    for path in folder.glob("modules-*.txt"):
        if path.name.startswith("modules-tensorflow-"):
            continue
        for module in path.read_text().split():
            names = {norm(dist) for dist in dists.get(module, [])} - OWN_DISTRIBUTIONS
            if names and module not in OPTIONAL_MODULES and not names & known:
                out.add(f"{module} ({', '.join(sorted(names))})")
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    what = (argv if argv is not None else sys.argv[1:]) or ["check"]
    if what[0] == "download":
        download()
    problems = missing() + unmet_requirements()
    error = resolve_offline() if not problems else ""
    for problem in [*problems, *([error] if error else [])]:
        print(problem, file=sys.stderr)
    print(f"{len(wheel_files())} wheels in {WHEELS}", file=sys.stderr)
    return 1 if problems or error else 0


if __name__ == "__main__":
    sys.exit(main())
