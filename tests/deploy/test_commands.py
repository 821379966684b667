"""Every command in docker-compose.yml exists in the project, and is what `latency-lab up` runs.

Each lab container runs one of the processes of ``latency_lab.lab.runtime.lab_tiers``: the same
gunicorn factories, the same worker module, the same Streamlit script. Options are parsed by the
tools' own parsers (gunicorn, Streamlit's configuration, click), so a misspelt flag fails here, not
in a container. Health checks are Python one-liners: they must compile and probe their own process.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import streamlit.config
from click.testing import CliRunner
from gunicorn.config import Config as GunicornConfig

import latency_lab.seed.seeding
from latency_lab.cli.main import cli
from latency_lab.core.settings import Settings
from latency_lab.lab.runtime import HttpProbe, LabOptions, ProcessSpec, dashboard_script, lab_tiers
from latency_lab.seed.seeding import SeedReport
from tests.deploy.compose_file import CHECKOUT, command_of, listening_port, load_compose

# Compose service -> the process of `latency-lab up` it is.
GUNICORN_SERVICES = {"service": "service", "thirdparty": "thirdparty", "edge-embedded": "edge"}
NATIVE_NAMES = GUNICORN_SERVICES | {"dashboard": "dashboard"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found: dict[str, Any] = load_compose()["services"]
    return found


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ProcessSpec]:
    """The processes `latency-lab up` starts, by name."""
    settings = Settings(LAB_VAR_DIR=tmp_path_factory.mktemp("var"))
    tiers = lab_tiers(settings, LabOptions(dashboard=True), "redis://127.0.0.1:6379/0")
    return {spec.name: spec for tier in tiers for spec in tier}


def _gunicorn_app(argv: list[str] | tuple[str, ...]) -> tuple[str, Any]:
    start = list(argv).index("gunicorn") + 1 if "gunicorn" in argv else 0
    parsed = GunicornConfig().parser().parse_args(list(argv)[start:])  # exits on unknown flags
    assert len(parsed.args) == 1, f"one application expected, got {parsed.args}"
    return parsed.args[0], parsed


@pytest.mark.parametrize("name", sorted(GUNICORN_SERVICES))
def test_gunicorn_serves_the_same_factory_as_latency_lab_up(
    services: dict[str, Any], native: dict[str, ProcessSpec], name: str
) -> None:
    app, parsed = _gunicorn_app(command_of(services[name]))

    module_name, _, call = app.partition(":")
    factory = getattr(importlib.import_module(module_name), call.removesuffix("()"))
    assert callable(factory)
    assert app == _gunicorn_app(native[GUNICORN_SERVICES[name]].argv)[0]
    assert parsed.worker_class == "gthread"
    assert parsed.bind == [f"0.0.0.0:{listening_port(name, services[name])}"]


def test_workers_run_the_worker_module(
    services: dict[str, Any], native: dict[str, ProcessSpec]
) -> None:
    command = command_of(services["worker"])

    assert command[:2] == ["python", "-m"]
    spec = importlib.util.find_spec(command[2])
    assert spec is not None and spec.origin is not None
    assert callable(importlib.import_module(command[2]).main)
    assert "__main__" in Path(spec.origin).read_text()  # runs main() under `python -m`
    assert tuple(command[1:]) == native["worker-1"].argv[1:]


def test_the_dashboard_runs_the_streamlit_app_with_known_options(
    services: dict[str, Any], native: dict[str, ProcessSpec]
) -> None:
    command = command_of(services["dashboard"])

    assert command[:2] == ["streamlit", "run"]
    script = CHECKOUT / command[2]  # relative to the image's WORKDIR, a copy of the checkout
    assert script.is_file() and script == dashboard_script()
    assert str(script) in native["dashboard"].argv
    for option in command[3:]:
        key, _, value = option.removeprefix("--").partition("=")
        default = streamlit.config.get_option(key)  # raises for an unknown option
        if isinstance(default, bool):
            assert value in ("true", "false"), option
        elif isinstance(default, int):
            assert value.isdigit(), option


def test_the_seed_job_is_the_console_script_and_seeds_what_it_says(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    command = command_of(services["seed"])
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    assert project["scripts"][command[0]] == "latency_lab.cli.main:main"
    calls: list[dict[str, Any]] = []

    def recording_seed(url: str, **options: Any) -> SeedReport:
        calls.append({"url": url, **options})
        return SeedReport(options["leads"], options["users"], options["tags"], True, "")

    monkeypatch.setattr(latency_lab.seed.seeding, "seed_database", recording_seed)
    environment = services["seed"]["environment"]

    # LAB_VAR_DIR as the Dockerfile sets it, here in a temporary directory.
    env = environment | {"LAB_VAR_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, command[1:], env=env)

    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "url": environment["LAB_DATABASE_URL"],
            "leads": 5000,
            "users": 50,
            "tags": 30,
            "seed": 42,
            "progress": False,
            "reset": False,
        }
    ]


def _healthcheck_source(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return str(test[3])


@pytest.mark.parametrize("name", sorted(NATIVE_NAMES))
def test_http_healthchecks_compile_and_ask_what_latency_lab_up_asks(
    services: dict[str, Any], native: dict[str, ProcessSpec], name: str
) -> None:
    source = _healthcheck_source(services[name])
    ast.parse(source)

    match = re.search(r"'(http://127\.0\.0\.1:\d+/\S*?)'", source)
    assert match, source
    probe = urlsplit(match.group(1))
    assert probe.port == listening_port(name, services[name])
    assert isinstance(native[NATIVE_NAMES[name]].probe, HttpProbe)
    assert probe.path == urlsplit(native[NATIVE_NAMES[name]].probe.url).path


def test_the_worker_healthcheck_compiles() -> None:
    """It runs for real against a live worker in test_postgres_stack.py."""
    ast.parse(_healthcheck_source(load_compose()["services"]["worker"]))
