"""The plugin installed alone, as another project installs it: ``pip install latency-lab``.

A fresh virtual environment gets this checkout without extras (plus Flask, which the user's
project needs), from the package registry: none of the lab's server stack may come with it, the
plugin's modules must import, and the plain Flask + SQLAlchemy project of
``user_projects/plain`` must fail and pass exactly as it does in the lab's own environment.
About 30 s (most of it building the wheel); skipped, saying why, when the registry cannot be
reached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
# latency_lab/ links the program folders: copied with its links followed, it is the whole package.
SOURCES = ("pyproject.toml", "README.md", "latency_lab")
PLAIN_PROJECT = Path(__file__).parent / "user_projects" / "plain"
LAB_ONLY = ("flask_sqlalchemy", "streamlit", "redis", "rq", "gunicorn", "pandas", "pydantic")
PLUGIN_NEEDS = ("sqlalchemy", "opentelemetry.sdk", "pytest")
UNREACHABLE = ("Failed to establish a new connection", "Temporary failure in name resolution")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def plugin_only_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a new venv holding ``latency-lab`` (no extra) and Flask."""
    root = tmp_path_factory.mktemp("plugin-only")
    source = _copy_sources(root / "source")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
    python = root / "venv" / "bin" / "python"
    # This environment's pip installs into the new one (``--python``): no pip bootstrap there.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", source, "flask"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if install.returncode != 0:
        if any(symptom in install.stderr for symptom in UNREACHABLE):
            pytest.skip(f"the package registry is unreachable: {install.stderr[-300:]}")
        pytest.fail(f"pip install of the plugin alone failed:\n{install.stderr}")
    return python


def _copy_sources(destination: Path) -> Path:
    """The files ``pip install .`` reads, so that building never writes into the checkout."""
    destination.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        if (CHECKOUT / name).is_dir():
            shutil.copytree(CHECKOUT / name, destination / name, ignore=ignore)
        else:
            shutil.copy(CHECKOUT / name, destination / name)
    return destination


def python_json(python: Path, code: str) -> object:
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_lab_stack_stays_out(plugin_only_python: Path) -> None:
    names = LAB_ONLY + PLUGIN_NEEDS
    code = (
        "import importlib.util, json; "
        f"print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {names!r}}}))"
    )
    found = python_json(plugin_only_python, code)

    assert found == {name: name in PLUGIN_NEEDS for name in names}


def test_the_plugin_imports_only_its_own_modules(plugin_only_python: Path) -> None:
    code = (
        "import json, sys; "
        "import latency_lab.telemetry.pytest_plugin, latency_lab.telemetry.testing; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith('latency_lab.') or m.split('.')[0] == 'flask')))"
    )
    imported = python_json(plugin_only_python, code)

    assert isinstance(imported, list)
    assert (
        "latency_lab.telemetry.testing" in imported
        and "latency_lab.telemetry.engine_watch" in imported
    )
    assert not [name for name in imported if not name.startswith("latency_lab.telemetry")]


def test_the_plain_flask_project_runs_on_the_plugin_alone(
    plugin_only_python: Path, tmp_path: Path
) -> None:
    for name in ("app.py", "test_books.py"):
        shutil.copy(PLAIN_PROJECT / name, tmp_path / name)

    run = subprocess.run(
        [plugin_only_python, "-m", "pytest", "-p", "no:cacheprovider", "-rA"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert "plugins: latency-lab-0.1.0" in run.stdout
    assert "2 failed, 1 passed" in run.stdout, run.stdout
    assert "Expected at most 1 database statements, 11 were executed:" in run.stdout
    assert "Book.author: 10 statements (threshold 5," in run.stdout
    assert "PASSED test_books.py::test_eager_listing_fits_one_statement" in run.stdout
