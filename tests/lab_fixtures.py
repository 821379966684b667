"""Fixtures for the lead service: seeded databases (SQLite, and PostgreSQL on ``tests.postgres``'s
server when one is reachable), the third-party simulator as a real process, RQ workers as real
processes, and an app per test whose spans are captured in memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gunicorn
import httpx
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from latency_lab import telemetry
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import World
from latency_lab.lab.programs import LabOptions, lab_tiers
from latency_lab.lab.redis_server import RedisServer, free_port
from latency_lab.seed.seeding import seed_database
from latency_lab.service.app import create_app
from latency_lab.service.context import EXTENSION_KEY
from latency_lab.telemetry import vocabulary as v
from tests.postgres import PostgresServer

SEED_LEADS = 120
# Tests are about counts, not waiting: a fast world (no injected latency).
FAST_WORLD = {
    "db_round_trip_ms": 0.0,
    "email": {"latency_ms": 1.0, "jitter_ms": 0.0},
    "analytics": {"latency_ms": 1.0, "jitter_ms": 0.0},
    "enrichment": {"latency_ms": 1.0, "jitter_ms": 0.0},
}
# A valid lead for the create tests (owner 2 and tag "enterprise" exist in every seeded data set).
NEW_LEAD = {
    "company": "Hooli",
    "contact_name": "Gavin Belson",
    "email": "gavin@hooli.example",
    "owner_id": 2,
    "tags": ["enterprise"],
    "metadata": {"source": "event"},
}


def process_env(**values: str) -> dict[str, str]:
    """This environment without the lab's and OpenTelemetry's settings, plus ``values``."""
    env = {k: val for k, val in os.environ.items() if not k.startswith(("LAB_", "OTEL_"))}
    env.pop("REDIS_URL", None)
    return env | values


def start_process(
    args: list[str], *, env: dict[str, str], log_file: Path
) -> subprocess.Popen[bytes]:
    """A child in its own session (stopping the group stops its children), logging to a file."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_gunicorn(
    app_factory: str,
    *,
    port: int,
    env: dict[str, str],
    log_file: Path,
    threads: int = 16,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", str(threads),
            "-w", str(workers), "-b", f"127.0.0.1:{port}", app_factory]  # fmt: skip
    if gunicorn.version_info >= (25, 1):
        # Not the per-user default control socket, which concurrent gunicorns would share.
        args.insert(3, "--no-control-socket")
    return start_process(args, env=env, log_file=log_file)


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], log_file: Path, timeout_s: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited ({process.returncode}):\n{log_file.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer in {timeout_s}s:\n{log_file.read_text()}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


# --- databases --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "template.db"
    seed_database(f"sqlite:///{path}", leads=SEED_LEADS, users=20, tags=30, seed=7, progress=False)
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    """A seeded PostgreSQL template database for this session (its name)."""
    name = postgres_server.create_database("tpl")
    seed_database(
        postgres_server.url(name), leads=SEED_LEADS, users=20, tags=30, seed=7, progress=False
    )
    yield name
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    """A fresh copy of the seeded template for one test (CREATE DATABASE ... TEMPLATE)."""
    name = postgres_server.create_database("test", template=postgres_template)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_database")
        return url
    path = tmp_path / "lab.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "lab.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# --- the slow world, made fast ------------------------------------------------------------------
@pytest.fixture
def lab_redis(redis_url: str) -> Iterator[str]:
    """The session's private Redis, emptied, with the fast world in place."""
    state = SharedState(redis.Redis.from_url(redis_url))
    state.set_world(World.from_json(FAST_WORLD))
    state.close()
    yield redis_url


@dataclass
class ThirdParty:
    url: str

    def calls(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/calls", timeout=5).json()
        return body

    def delivered(self, provider: v.Provider) -> int:
        counts = self.calls()["counts"].get(provider.value, {})
        return int(counts.get("delivered", 0))

    def reset(self) -> None:
        httpx.delete(f"{self.url}/calls", timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def thirdparty_process(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThirdParty]:
    workdir = tmp_path_factory.mktemp("thirdparty")
    port = free_port()
    env = process_env(
        REDIS_URL=redis_server.url, LAB_VAR_DIR=str(workdir), OTEL_SDK_DISABLED="true"
    )
    log_file = workdir / "thirdparty.log"
    process = start_gunicorn(
        "latency_lab.simulator.app:create_thirdparty_app()", port=port, env=env, log_file=log_file
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/healthz", process, log_file)
    yield ThirdParty(url)
    stop_process(process)


@pytest.fixture
def thirdparty(thirdparty_process: ThirdParty, lab_redis: str) -> ThirdParty:
    """The simulator, with no calls recorded and the fast world seen by its poller."""
    thirdparty_process.reset()
    time.sleep(0.3)  # the simulator's shared-state poller (0.2 s) picks up the fast world
    return thirdparty_process


# --- the app ------------------------------------------------------------------------------------
@dataclass
class Lab:
    app: Flask
    client: FlaskClient
    spans: InMemorySpanExporter
    settings: Settings

    def close(self) -> None:
        self.app.extensions[EXTENSION_KEY].close()

    def get(self, path: str, toggles: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if toggles is not None:
            headers["X-Lab-Toggles"] = toggles
        return self.client.get(path, headers=headers, **kwargs)

    def server_span(self, trace_id_hex: str) -> Any:
        for span in self.spans.get_finished_spans():
            if f"{span.context.trace_id:032x}" == trace_id_hex and span.kind.name == "SERVER":
                return span
        raise AssertionError(f"no server span for trace {trace_id_hex}")

    def statements(self, trace_id_hex: str) -> list[str]:
        return [
            str(v.db_statement(span.attributes))
            for span in self.spans.get_finished_spans()
            if f"{span.context.trace_id:032x}" == trace_id_hex
            and v.db_statement(span.attributes) is not None
        ]


def trace_id_of(response: Any) -> str:
    return str(response.headers["traceresponse"].split("-")[1])


def make_lab(
    database_url: str, redis_url: str, thirdparty_url: str, tmp_path: Path, **overrides: Any
) -> Lab:
    exporter = InMemorySpanExporter()
    lab_telemetry = telemetry.configure(
        "latency-lab-service-test", role="service", processors=[SimpleSpanProcessor(exporter)]
    )
    values: dict[str, Any] = {
        "LAB_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LAB_THIRDPARTY_URL": thirdparty_url,
        "LAB_VAR_DIR": tmp_path,
    }
    settings = Settings(**(values | overrides))
    app = create_app(settings, lab_telemetry=lab_telemetry)
    return Lab(app=app, client=app.test_client(), spans=exporter, settings=settings)


@pytest.fixture
def lab_factory(
    database_url: str, lab_redis: str, thirdparty: ThirdParty, tmp_path: Path
) -> Iterator[Callable[..., Lab]]:
    """Build service apps (each as a separate process would be) sharing this test's DB/Redis."""
    built: list[Lab] = []

    def build(**overrides: Any) -> Lab:
        built.append(make_lab(database_url, lab_redis, thirdparty.url, tmp_path, **overrides))
        return built[-1]

    yield build
    for lab in built:
        lab.close()


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory()


# --- real service and worker processes -----------------------------------------------------------
@dataclass
class ServiceProcess:
    url: str
    trace_store_url: str


@pytest.fixture
def lab_process_env(
    database_url: str, lab_redis: str, thirdparty: ThirdParty, tmp_path: Path
) -> dict[str, str]:
    """Environment for real lab processes sharing this test's database, Redis and store."""
    return process_env(
        LAB_DATABASE_URL=database_url,
        REDIS_URL=lab_redis,
        LAB_THIRDPARTY_URL=thirdparty.url,
        LAB_VAR_DIR=str(tmp_path),
        LAB_TRACE_STORE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )


def start_lab_service(
    env: dict[str, str], log_file: Path, *, workers: int = 1
) -> tuple[str, subprocess.Popen[bytes]]:
    """The lead service started with the very command `latency-lab up` runs (``lab_tiers``):
    gunicorn, preloaded, ``workers`` workers of four threads. Its URL and process, once up."""
    port = free_port()
    settings = Settings(
        LAB_HOST="127.0.0.1",
        LAB_SERVICE_PORT=port,
        LAB_SERVICE_WORKERS=workers,
        LAB_VAR_DIR=Path(env["LAB_VAR_DIR"]),
    )
    tiers = lab_tiers(settings, LabOptions(dashboard=False), env["REDIS_URL"])
    (spec,) = [spec for tier in tiers for spec in tier if spec.name == "service"]
    process = start_process(list(spec.argv), env=env, log_file=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/healthz", process, log_file)
    except AssertionError:
        stop_process(process)
        raise
    return url, process


@pytest.fixture
def service_process(lab_process_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    """The lead service, as `latency-lab up` runs it (one worker)."""
    url, process = start_lab_service(lab_process_env, tmp_path / "service.log")
    try:
        yield ServiceProcess(url, lab_process_env["LAB_TRACE_STORE_URL"])
    finally:
        stop_process(process)


@pytest.fixture
def edge_url(
    service_process: ServiceProcess, lab_process_env: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    """The edge under gunicorn in front of :func:`service_process`, as `latency-lab up` runs it."""
    port = free_port()
    log_file = tmp_path / "edge.log"
    env = lab_process_env | {"LAB_SERVICE_URL": service_process.url}
    process = start_gunicorn(
        "latency_lab.edge.app:create_edge_app()", port=port, env=env, log_file=log_file
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/edge/healthz", process, log_file)
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def worker_process(
    lab_process_env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `rq` worker process for the side-effects queue."""
    process = start_process(
        [sys.executable, "-m", "latency_lab.worker.process"],
        env=lab_process_env,
        log_file=tmp_path / "worker.log",
    )
    yield process
    stop_process(process)


def eventually(
    check: Callable[[], Any], *, timeout_s: float = 10.0, interval_s: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout_s
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = check()
    return value


# --- the whole lab, as a user starts it ----------------------------------------------------------
def lab_up_env(var_dir: Path, **values: str) -> dict[str, str]:
    """The environment of a ``latency-lab up`` of a test's own: its var dir, every port free,
    spans exported every 100 ms (``values`` win)."""
    ports = {
        f"LAB_{name}_PORT": str(free_port())
        for name in ("EDGE", "SERVICE", "THIRDPARTY", "DASHBOARD")
    }
    return process_env(
        LAB_VAR_DIR=str(var_dir), **ports, **({"OTEL_BSP_SCHEDULE_DELAY": "100"} | values)
    )


@contextmanager
def latency_lab_up(
    var_dir: Path, *, seed_leads: int, timeout_s: float = 90.0
) -> Iterator[dict[str, str]]:
    """``latency-lab up`` on free ports in ``var_dir`` (one gunicorn worker, one RQ worker, a
    seeded data set of ``seed_leads``), with the fast world; yields the URLs it wrote to
    ``lab.json`` once the dashboard answers, and stops the whole lab afterwards."""
    env = lab_up_env(var_dir, OTEL_BSP_SCHEDULE_DELAY="200")
    command = [
        str(Path(sys.executable).parent / "latency-lab"),
        "up",
        "--workers",
        "1",
        "--rq-workers",
        "1",
        "--seed-leads",
        str(seed_leads),
    ]
    log_file = var_dir / "up.log"
    process = start_process(command, env=env, log_file=log_file)
    try:
        urls = _lab_urls(var_dir / "lab.json", process, log_file, timeout_s)
        wait_until_up(f"{urls['dashboard']}/_stcore/health", process, log_file)
        httpx.put(f"{urls['service']}/admin/world", json=FAST_WORLD, timeout=5).raise_for_status()
        yield urls
    finally:
        stop_process(process)


def _lab_urls(
    lab_file: Path, process: subprocess.Popen[bytes], log_file: Path, timeout_s: float
) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"latency-lab up exited:\n{log_file.read_text()[-3000:]}")
        if lab_file.exists():
            try:
                urls: dict[str, str] = json.loads(lab_file.read_text())["urls"]
            except (ValueError, KeyError):  # being written
                urls = {}
            if "dashboard" in urls:
                return urls
        time.sleep(0.2)
    raise RuntimeError(
        f"the lab did not start in {timeout_s:.0f} s:\n{log_file.read_text()[-3000:]}"
    )
