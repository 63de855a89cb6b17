"""The package as users get it: `python -m build` makes a wheel and an sdist, `twine check`
accepts both, the wheel holds every file of the packages (Lua, Avro schemas, the dashboard's
templates and static files), and a clean virtualenv with the wheel alone runs `saga --version`,
`saga doctor --help` and the orchestrator against the real stack, from a directory outside the
checkout so that nothing is imported from it.

The build runs in a copy of the tree: building in place would rewrite the checkout's egg-info
and build/ under the editable install other test runs are using. Installing the wheel's
dependencies needs PyPI (pip's own cache makes later runs faster)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import orchestrator
from schemas.config import Settings
from tests.support import dockerfile
from tests.support.kafka import wait_for
from tests.support.procs import orchestrator_env, stop
from tests.test_http import free_port

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
#: the top-level packages the wheel installs (pyproject's packages.find include)
PACKAGES = ("orchestrator", "participants", "schemas", "infra")
#: not from the checkout: the build copy leaves these out (they are local state, not source)
NOT_SOURCE = (".git", ".venv", ".stack", "__pycache__", "*.egg-info", "build", "dist", ".*_cache")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    cwd: Path  # outside the checkout

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)


def _run(
    cmd: list[str], timeout_s: float, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run to completion; a failure shows the command's output."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, env=env or _clean_env()
    )
    assert proc.returncode == 0, (
        f"{cmd} exit {proc.returncode}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
    )
    return proc


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point Python at the checkout or .venv."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(var, None)
    return env


def _package_files() -> set[str]:
    """Every file of the packages that git knows of (tracked, or new and not ignored)."""
    out = _run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *PACKAGES],
        60,
        cwd=ROOT,
    ).stdout
    return {name for name in out.splitlines() if (ROOT / name).is_file()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    base = tmp_path_factory.mktemp("dist")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = base / "out"
    # the default build: an sdist, then the wheel built from that sdist (so the sdist is complete)
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], 600, env=_clean_env())
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return Dist(wheel=wheels[0], sdist=sdists[0])


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("venv")
    root, cwd = base / "venv", base / "cwd"
    cwd.mkdir()
    assert not cwd.is_relative_to(ROOT) and not root.is_relative_to(ROOT)
    _run([sys.executable, "-m", "venv", str(root)], 120, env=_clean_env())
    # the wheel alone: its dependencies come from the index, nothing from the checkout or .venv
    _run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", str(dist.wheel)],
        600,
        env=_clean_env(),
        cwd=cwd,
    )
    return Venv(root=root, cwd=cwd)


def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dist: Dist) -> None:
    """Both artifacts are named for the project's version and pass `twine check --strict`
    (the long description renders on PyPI, the metadata is complete)."""
    stem = f"{PROJECT['name'].replace('-', '_')}-{VERSION}"
    assert dist.wheel.name == f"{stem}-py3-none-any.whl"
    assert dist.sdist.name == f"{stem}.tar.gz"
    _run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist.wheel), str(dist.sdist)], 120
    )


def test_the_wheel_metadata_names_the_licence_and_classifiers(dist: Dist) -> None:
    """The wheel carries the licence (expression and file), the classifiers, the summary, the
    short PyPI page and the `saga` entry point from pyproject.toml."""
    stem = f"{PROJECT['name'].replace('-', '_')}-{VERSION}"
    with zipfile.ZipFile(dist.wheel) as whl:
        meta = whl.read(f"{stem}.dist-info/METADATA").decode()
        licence = whl.read(f"{stem}.dist-info/licenses/LICENSE").decode()
        entry_points = whl.read(f"{stem}.dist-info/entry_points.txt").decode()
    assert "License-Expression: Apache-2.0" in meta
    assert "Apache License" in licence and "Version 2.0" in licence
    assert licence == (ROOT / "LICENSE").read_text()
    for classifier in PROJECT["classifiers"]:
        assert f"Classifier: {classifier}\n" in meta
    assert f"Summary: {PROJECT['description']}\n" in meta
    assert "Description-Content-Type: text/markdown" in meta
    assert (ROOT / PROJECT["readme"]["file"]).read_text().strip() in meta
    assert "saga = orchestrator.ops.cli:run" in entry_points


def test_the_wheel_and_sdist_hold_every_file_of_the_packages(dist: Dist) -> None:
    """Every file of the packages is in both artifacts: the Lua scripts, the Avro schemas, the
    dashboard's templates and static files, and each module (a folder missing __init__.py
    would be left out silently)."""
    files = _package_files()
    lua = {f for f in files if f.endswith(".lua")}
    avsc = {f for f in files if f.endswith(".avsc")}
    # the check cannot pass on an empty listing
    assert "orchestrator/engine/lua/step.lua" in lua and len(lua) >= 8
    assert "schemas/avro/SagaCommand.avsc" in avsc
    with zipfile.ZipFile(dist.wheel) as whl:
        in_wheel = set(whl.namelist())
    assert files - in_wheel == set()
    ui = {
        f
        for f in files
        if f.startswith(("orchestrator/ops/ui/templates/", "orchestrator/ops/ui/static/"))
    }
    assert ui <= in_wheel
    with tarfile.open(dist.sdist) as sdist:
        top = f"{PROJECT['name'].replace('-', '_')}-{VERSION}/"
        in_sdist = {m.name.removeprefix(top) for m in sdist.getmembers() if m.isfile()}
    assert files - in_sdist == set()
    assert {"pyproject.toml", "LICENSE", PROJECT["readme"]["file"]} <= in_sdist


def test_a_clean_virtualenv_with_the_wheel_runs_saga(venv: Venv) -> None:
    """`saga --version` prints the package's version, `saga doctor --help` works, the code is
    imported from the virtualenv (not the checkout) and the dependencies are consistent."""
    env = _clean_env()
    version = _run([venv.bin("saga"), "--version"], 120, env=env, cwd=venv.cwd).stdout
    assert version.strip() == f"saga {VERSION}"
    assert orchestrator.__version__ == VERSION
    doctor = _run([venv.bin("saga"), "doctor", "--help"], 120, env=env, cwd=venv.cwd).stdout
    assert "Kafka and Redis" in doctor
    where = _run(
        [
            venv.bin("python"),
            "-c",
            "import orchestrator, participants; print(orchestrator.__file__)",
        ],
        120,
        env=env,
        cwd=venv.cwd,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv.root), where
    _run([venv.bin("python"), "-m", "pip", "check"], 120, env=env, cwd=venv.cwd)


async def test_the_installed_orchestrator_becomes_ready_on_the_stack(
    venv: Venv, settings: Settings, tmp_path: Path
) -> None:
    """`saga orchestrator run` from the virtualenv, with the shipped order saga (the default),
    joins this test's topics and answers ready on /readyz; deploy/Dockerfile's HEALTHCHECK
    command passes against it, and fails once SIGTERM has stopped it (cleanly). When the
    checkout has the dashboard, /ui and the static files it links are served from the wheel."""
    port = free_port()
    env = orchestrator_env(settings, SAGA_HTTP_PORT=str(port), SAGA_LOG_LEVEL="INFO")
    env.pop("PYTHONPATH")  # orchestrator_env points at the checkout; this run must not
    env.pop("SAGA_SAGA_MODULES")  # the default: participants.samples.order.saga, from the wheel
    env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    log_path = tmp_path / "orchestrator.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [venv.bin("saga"), "orchestrator", "run"],
            env=env,
            cwd=venv.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()[-4000:]
                try:
                    reply = await http.get("/readyz")
                except httpx.TransportError:
                    return False  # not listening yet
                return reply.status_code == 200 and reply.json()["status"] == "ready"

            await wait_for(ready, 240, "the installed orchestrator's /readyz")
            assert (await http.get("/livez")).json() == {"status": "alive"}
            # the checkout decides, not the install: a wheel missing the templates must fail here
            if (ROOT / "orchestrator" / "ops" / "ui" / "templates").is_dir():
                page = await http.get("/ui")
                assert page.status_code == 200, page.text[:2000]
                assert page.headers["content-type"].startswith("text/html")
                # the stylesheets and scripts the page links come from the installed package
                for asset in set(re.findall(r'(?:href|src)="(/ui/static/[^"?#]+)', page.text)):
                    assert (await http.get(asset)).status_code == 200, asset
            assert _healthcheck(venv, port) == 0
    finally:
        stop(proc, timeout_s=60)
    assert proc.returncode == 0, log_path.read_text()[-4000:]
    assert _healthcheck(venv, port) != 0


def _healthcheck(venv: Venv, port: int) -> int:
    """deploy/Dockerfile's HEALTHCHECK command, with the virtualenv's python as the image's."""
    command = dockerfile.healthcheck_command(dockerfile.load()[-1])
    assert command[0] == "python"
    env = {**_clean_env(), "SAGA_HTTP_PORT": str(port)}
    argv = [venv.bin("python"), *command[1:]]
    return subprocess.run(argv, env=env, cwd=venv.cwd, capture_output=True, timeout=60).returncode
