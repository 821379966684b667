"""The Dockerfile: python:3.12-slim, `pip install .` from a build context .dockerignore keeps small,
a non-root user, and a wheel that holds every command docker-compose.yml runs.

No Docker engine here: the build context is computed with docker-py's implementation of
.dockerignore, copied to a directory, and built into a wheel by pip, as `RUN pip install .` would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from docker.utils.build import exclude_paths

from tests.deploy.compose_file import CHECKOUT, DOCKERFILE, DOCKERIGNORE

# What the image must never carry: local state, secrets, caches, the repository itself.
NEVER_IN_CONTEXT = (".venv", "var", ".git", ".env", "tests", ".mypy_cache", "latency_lab.egg-info")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def build_context() -> set[str]:
    """Paths (relative, files and directories) that `docker build .` would send."""
    patterns = DOCKERIGNORE.read_text().splitlines()
    return set(exclude_paths(str(CHECKOUT), patterns, dockerfile="Dockerfile"))


def test_python_312_slim_installed_with_pip_and_run_as_a_user() -> None:
    steps = instructions()
    froms = [arguments for keyword, arguments in steps if keyword == "FROM"]
    users = [arguments for keyword, arguments in steps if keyword == "USER"]

    assert froms == ["python:3.12-slim"]
    assert ("RUN", "pip install '.[lab]'") in steps  # the lab's stack is the `lab` extra
    assert users and users[-1] not in ("root", "0"), "the lab must not run as root"
    user_step = steps.index(("USER", users[-1]))
    assert any(k == "RUN" and "useradd" in a and users[-1] in a for k, a in steps[:user_step])


def test_every_copied_path_is_in_the_build_context() -> None:
    context = build_context()
    copies = [arguments.split() for keyword, arguments in instructions() if keyword == "COPY"]

    for *sources, _destination in copies:
        for source in sources:
            path = source.rstrip("/")
            assert (CHECKOUT / path).exists(), f"COPY {source}: not in the checkout"
            assert path in context, f"COPY {source}: excluded by .dockerignore"


def test_the_context_leaves_local_state_and_secrets_out() -> None:
    context = build_context()

    for path in NEVER_IN_CONTEXT:
        assert not any(p == path or p.startswith(path + "/") for p in context), path
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in context)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip install .` builds from exactly the build context."""
    context_dir = tmp_path_factory.mktemp("context")
    for relative in build_context():
        source = CHECKOUT / relative
        target = context_dir / relative
        if source.is_symlink():  # latency_lab/<program> -> ../<program>, as COPY keeps it
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(out),
            str(context_dir),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel_path,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel_path)


def test_the_image_installs_every_command_of_the_stack(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())

    for module in (
        "latency_lab/service/app.py",
        "latency_lab/simulator/app.py",
        "latency_lab/edge/app.py",
        "latency_lab/worker/process.py",
        "latency_lab/worker/relay.py",
        "latency_lab/cli/main.py",
        "latency_lab/seed/seeding.py",
        "latency_lab/dashboard/app.py",
        "latency_lab/telemetry/store/__init__.py",
    ):
        assert module in names, f"{module} missing from the image's installation"
    assert any(n.startswith("latency_lab/service/static/") for n in names)
    assert any(n.startswith("latency_lab/service/templates/") for n in names)
    assert not any(n.startswith(("service/", "telemetry/")) for n in names)  # one import name
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "latency-lab = latency_lab.cli.main:main" in wheel.read(entry_points).decode()


def test_the_dashboard_pages_ship_next_to_its_script() -> None:
    """Streamlit runs dashboard/app.py from the image's copy of the checkout (WORKDIR /app)."""
    workdirs = [a for k, a in instructions() if k == "WORKDIR"]
    context = build_context()
    pages = [p for p in (CHECKOUT / "dashboard").rglob("*.py") if "__pycache__" not in p.parts]

    assert workdirs == ["/app"]
    assert all(str(p.relative_to(CHECKOUT)) in context for p in pages)
