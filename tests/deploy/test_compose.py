"""docker-compose.yml: valid Compose, the stack the issue asks for, processes that find each other.

No Docker engine runs here. The file is checked with ``docker compose config`` where the Compose
CLI exists (skipped otherwise), and always against the Compose Specification's JSON schema,
vendored as ``compose-spec.json`` (from the compose-spec/compose-spec repository, Apache-2.0,
``compose-spec.LICENSE``; the copy shipped in check-jsonschema 0.39.0's wheel, sha256
d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from pydantic import ValidationError

from latency_lab.core.settings import Settings
from tests.deploy.compose_file import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    MissingVariable,
    command_of,
    listening_port,
    load_compose,
    raw_compose,
    read_env_file,
    variables,
)

SCHEMA = Path(__file__).with_name("compose-spec.json")
REQUIRED_SECRETS = {"LAB_ADMIN_TOKEN", "POSTGRES_PASSWORD"}
# The containers that run the lab's own code (one image, built here).
LAB_SERVICES = {"seed", "thirdparty", "service", "worker", "relay", "dashboard", "edge-embedded"}
EXPECTED_SERVICES = LAB_SERVICES | {"postgres", "redis", "jaeger", "edge"}
JAEGER_UI_PORT = 16686


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


# --- valid Compose --------------------------------------------------------------------------------
def _compose_cli() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            version = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        # Compose v1 (docker-compose 1.x) predates the Compose Specification's newer keys.
        if version.returncode == 0 and re.search(r"\bv?2\.\d+", version.stdout):
            return command
    return None


def test_docker_compose_config_accepts_the_file_and_refuses_missing_secrets(
    tmp_path: Path,
) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI here (`docker compose`): checked against the schema only")
    base = [*cli, "--project-directory", str(COMPOSE_FILE.parent), "-f", str(COMPOSE_FILE)]
    env_file = tmp_path / "example.env"
    env_file.write_text(ENV_EXAMPLE.read_text())

    accepted = subprocess.run(
        [*base, "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    env_file.write_text("")
    refused = subprocess.run(
        [*base, "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert accepted.returncode == 0, accepted.stderr
    assert refused.returncode != 0
    assert any(name in refused.stderr for name in REQUIRED_SECRETS), refused.stderr


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)

    errors = sorted(validator.iter_errors(compose), key=lambda error: list(error.absolute_path))

    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_schema_rejects_what_compose_rejects() -> None:
    """The vendored schema is strict enough to catch a typo in a key."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    typo = {"services": {"service": {"image": "x", "depends_on": {"db": {"condition": "healthy"}}}}}
    assert not validator.is_valid(typo)
    assert not validator.is_valid({"services": {"service": {"image": "x", "helthcheck": {}}}})


# --- secrets and the .env.example ----------------------------------------------------------------
def test_secrets_are_required_and_named_when_missing() -> None:
    referenced = variables(COMPOSE_FILE.read_text())
    required = {name for name, op in referenced.items() if op in (":?", "?")}
    assert required == REQUIRED_SECRETS

    example = read_env_file()
    for secret in sorted(REQUIRED_SECRETS):
        with pytest.raises(MissingVariable) as refused:
            load_compose({k: v for k, v in example.items() if k != secret})
        assert refused.value.name == secret
        assert ".env" in str(refused.value)  # the message says where to set it
        with pytest.raises(MissingVariable):
            load_compose(example | {secret: ""})


def test_env_example_documents_every_variable_the_file_reads() -> None:
    referenced = set(variables(COMPOSE_FILE.read_text()))
    documented = set(read_env_file())

    assert referenced - documented == set(), "variables the compose file reads, not in .env.example"
    assert documented - referenced == set(), ".env.example variables the compose file never reads"
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"\$(?![{$])", text), "a bare $VAR: write ${VAR} (or $$ for a dollar)"


# --- the stack ---------------------------------------------------------------------------------
def test_the_stack_has_every_part(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["edge"]["image"].startswith("nginx:")
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:")
    # The lab's own edge is there to compare with nginx, only when asked for.
    assert [s for s in services if "profiles" in services[s]] == ["edge-embedded"]


def test_one_image_built_from_the_dockerfile_here(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in LAB_SERVICES}
    builds = {str(services[name].get("build")) for name in LAB_SERVICES}

    assert len(images) == 1
    assert builds == {"."}
    assert all("build" not in services[name] for name in EXPECTED_SERVICES - LAB_SERVICES)


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    # Jaeger's image has no shell tools to probe with; nothing waits for it to be healthy.
    unchecked = {name for name, s in services.items() if "healthcheck" not in s}
    assert unchecked == {"seed", "jaeger"}
    assert services["seed"]["restart"] == "no"  # a one-shot job: runs, exits 0, stays down


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if target == "seed":
                expected = "service_completed_successfully"
            elif "healthcheck" in services[target]:
                expected = "service_healthy"
            else:
                expected = "service_started"
            assert rule["condition"] == expected, f"{name} -> {target}"


def test_lab_processes_wait_for_postgres_and_readers_of_leads_for_the_seed(
    services: dict[str, Any],
) -> None:
    # Every lab process writes spans to the trace store on PostgreSQL.
    for name in LAB_SERVICES:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    waiting = {n for n in LAB_SERVICES if "seed" in services[n]["depends_on"]}
    assert waiting == {"service", "worker", "relay", "dashboard"}
    seed = command_of(services["seed"])
    assert seed[:2] == ["latency-lab", "seed"] and "--reset" not in seed  # idempotent


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    mounts = {
        name: [str(v).split(":")[0] for v in s.get("volumes", [])]
        for name, s in compose["services"].items()
    }
    assert "postgres-data" in mounts["postgres"]
    assert "redis-data" in mounts["redis"]
    named = {
        source
        for sources in mounts.values()
        for source in sources
        if not source.startswith((".", "/"))
    }
    assert named == declared


def test_workers_scale_and_nothing_pins_a_container_name(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "ports" not in worker
    assert int(worker["deploy"]["replicas"]) == int(read_env_file()["LAB_RQ_WORKERS"])
    assert all("container_name" not in s for s in services.values())


def test_published_ports_listen_on_loopback_unless_told(services: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}

    assert set(published) == {"edge", "edge-embedded", "dashboard", "jaeger"}
    for name, ports in published.items():
        for port in ports:
            host, _, container = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port}"
            # What people open: the edge, the dashboard, Jaeger's UI (not its OTLP receiver).
            expected = JAEGER_UI_PORT if name == "jaeger" else listening_port(name, services[name])
            assert int(container) == expected
    raw = raw_compose()["services"]
    assert all(
        str(p).startswith("${LAB_PUBLISH_HOST:-127.0.0.1}:")
        for name in published
        for p in raw[name]["ports"]
    )


# --- the lab's processes find each other ---------------------------------------------------------
def _urls(settings: Settings) -> Iterator[tuple[str, str]]:
    yield "LAB_DATABASE_URL", settings.resolved_database_url
    yield "LAB_TRACE_STORE_URL", settings.resolved_trace_store_url
    yield "REDIS_URL", str(settings.redis_url)
    yield "LAB_THIRDPARTY_URL", settings.resolved_thirdparty_url
    yield "LAB_SERVICE_URL", settings.resolved_service_url
    yield "LAB_EDGE_URL", settings.edge_url


@pytest.mark.parametrize("name", sorted(LAB_SERVICES))
def test_every_url_a_process_gets_points_at_a_service_listening_there(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in list(os.environ):
        if variable.startswith(("LAB_", "OTEL_")) or variable == "REDIS_URL":
            monkeypatch.delenv(variable)
    environment = services[name]["environment"]

    settings = Settings(**environment)

    assert settings.host == "0.0.0.0" and settings.admin_token  # exposed, so guarded
    for variable, url in _urls(settings):
        parts = urlsplit(url)
        assert parts.hostname in services, f"{name}: {variable}={url} names no compose service"
        assert parts.port == listening_port(parts.hostname, services[parts.hostname]), (
            f"{name}: {variable}={url}, but {parts.hostname} listens elsewhere"
        )
    otlp = urlsplit(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (otlp.hostname, otlp.port) == ("jaeger", listening_port("jaeger", services["jaeger"]))
    assert "OTEL_SERVICE_NAME" not in environment  # each process keeps its own name in Jaeger


def test_the_lab_refuses_to_listen_everywhere_without_the_token(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAB_ADMIN_TOKEN", raising=False)
    environment = dict(services["service"]["environment"])
    del environment["LAB_ADMIN_TOKEN"]

    with pytest.raises(ValidationError, match="LAB_ADMIN_TOKEN"):
        Settings(**environment)


def test_the_trace_store_database_is_created_on_first_start(services: dict[str, Any]) -> None:
    mounts = [str(v) for v in services["postgres"]["volumes"]]
    init_dir = next(m.split(":")[0] for m in mounts if "/docker-entrypoint-initdb.d" in m)
    scripts = " ".join(p.read_text() for p in (COMPOSE_FILE.parent / init_dir).glob("*.sql"))
    store = urlsplit(services["service"]["environment"]["LAB_TRACE_STORE_URL"]).path.strip("/")
    lab = urlsplit(services["service"]["environment"]["LAB_DATABASE_URL"]).path.strip("/")

    assert re.search(rf"CREATE DATABASE {store}\s*;", scripts)
    assert services["postgres"]["environment"]["POSTGRES_DB"] == lab


def test_jaeger_receives_otlp_on_every_interface(services: dict[str, Any]) -> None:
    command = command_of(services["jaeger"])
    assert "--set=receivers.otlp.protocols.http.endpoint=0.0.0.0:4318" in command
    assert any(str(p).endswith(f":{JAEGER_UI_PORT}") for p in services["jaeger"]["ports"])
