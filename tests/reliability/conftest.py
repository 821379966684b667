"""Fixtures for the reliability tests: a lab whose parts can be hurt.

``stack`` gives each test its own Redis (a real ``redis-server`` that the test may kill and start
again on the same port), a copy of the seeded SQLite database, a trace store, and the means to
start the lab's real processes against them: the service under gunicorn, RQ worker processes
(killable mid-job) and the outbox relay. The third-party simulator is the session's (it reads
its world from the session's Redis, so killing this test's Redis leaves the providers alone);
``stack.set_world`` changes the world in both Redis servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select

from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import World
from latency_lab.lab.redis_server import RedisServer, free_port
from latency_lab.lab.runtime import RqWorkerProbe
from latency_lab.service.db import build_engine, session_factory
from latency_lab.service.models import Lead
from latency_lab.service.offload import QUEUE_NAME
from latency_lab.service.outbox import counts
from tests.lab_fixtures import (
    FAST_WORLD,
    ThirdParty,
    eventually,
    process_env,
    start_gunicorn,
    start_process,
    wait_until_up,
)


@dataclass
class Stack:
    """One test's lab: its Redis, database and trace store, and the processes it started."""

    redis_server: RedisServer
    database_url: str
    trace_store_url: str
    thirdparty: ThirdParty
    session_redis_url: str
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    service_url: str = ""

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "LAB_DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "LAB_THIRDPARTY_URL": self.thirdparty.url,
            "LAB_VAR_DIR": str(self.workdir),
            "LAB_TRACE_STORE_URL": self.trace_store_url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        return process_env(**(values | extra))

    # --- processes ----------------------------------------------------------------------------
    def start_service(self, *, workers: int = 1, threads: int = 8, **env: str) -> str:
        port = free_port()
        log_file = self.workdir / "service.log"
        process = start_gunicorn("latency_lab.service.app:create_app()", port=port,
                                 env=self.env(**env), log_file=log_file, threads=threads,
                                 workers=workers)  # fmt: skip
        self.processes["service"] = process
        self.service_url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{self.service_url}/healthz", process, log_file, timeout_s=30)
        return self.service_url

    def start_worker(self, name: str = "worker", *, wait: bool = True) -> subprocess.Popen[bytes]:
        process = start_process([sys.executable, "-m", "latency_lab.worker.process"],
                                env=self.env(), log_file=self.workdir / f"{name}.log")  # fmt: skip
        self.processes[name] = process
        if wait:
            self.wait_for_worker(name)
        return process

    def wait_for_worker(self, name: str) -> None:
        probe, pid = RqWorkerProbe(self.redis_url), self.processes[name].pid
        registered = eventually(lambda: probe(pid), timeout_s=30, interval_s=0.1)
        assert registered, f"{name} did not register:\n{self.log(name)}"

    def start_relay(self) -> subprocess.Popen[bytes]:
        process = start_process([sys.executable, "-m", "latency_lab.worker.relay"], env=self.env(),
                                log_file=self.workdir / "relay.log")  # fmt: skip
        self.processes["relay"] = process
        return process

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else "(no log)"

    def stop_all(self) -> None:
        """SIGTERM, a short grace, then SIGKILL what is left, by process group."""
        processes = list(self.processes.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes.clear()

    # --- faults ---------------------------------------------------------------------------------
    def kill_redis(self) -> None:
        """SIGKILL: no goodbye, and (no persistence) everything it held is gone."""
        assert self.redis_server.process is not None
        self.redis_server.process.kill()
        self.redis_server.process.wait(timeout=10)

    def start_redis(self) -> None:
        """A new, empty redis-server on the same port."""
        self.redis_server.start()

    def kill_worker(self, name: str = "worker") -> None:
        """SIGKILL a worker process mid-job (every job it runs, on its threads, with it), as the
        OOM killer would."""
        worker = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def running_jobs(self, name: str = "worker") -> list[str]:
        """The jobs the worker process ``name`` runs right now (its slots' current jobs)."""
        return running_jobs(self.redis_url, self.processes[name].pid)

    def set_world(self, **changes: Any) -> World:
        """The same world for the lab (this test's Redis) and the providers (the session's)."""
        world: World | None = None
        for url in (self.redis_url, self.session_redis_url):
            state = SharedState(redis.Redis.from_url(url))
            world = state.set_world(World.from_json(changes, base=state.refresh().world))
            state.close()
        assert world is not None
        time.sleep(0.3)  # every process's shared-state poller (0.2 s) sees it
        return world

    # --- what a user would look at --------------------------------------------------------------
    def outbox_counts(self) -> dict[str, int]:
        engine = build_engine(self.database_url)
        try:
            with session_factory(engine)() as session:
                return counts(session=session)
        finally:
            engine.dispose()

    def lead_count(self, company_like: str = "%") -> int:
        engine = build_engine(self.database_url)
        try:
            with session_factory(engine)() as session:
                query = select(func.count()).where(Lead.company.like(company_like))
                return int(session.scalar(query) or 0)
        finally:
            engine.dispose()

    def failed_jobs(self) -> list[str]:
        with redis.Redis.from_url(self.redis_url) as client:
            return list(FailedJobRegistry(QUEUE_NAME, connection=client).get_job_ids())

    def queued_jobs(self) -> int:
        with redis.Redis.from_url(self.redis_url) as client:
            return int(Queue(QUEUE_NAME, connection=client).count)


def running_jobs(redis_url: str, worker_pid: int) -> list[str]:
    """The jobs a worker process runs right now: its RQ workers' (one per slot) current jobs."""
    with redis.Redis.from_url(redis_url) as client:
        workers = Worker.all(connection=client)
        return [
            job_id
            for worker in workers
            if worker.pid == worker_pid and (job_id := worker.get_current_job_id())
        ]


def collect_calls(thirdparty: ThirdParty) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{thirdparty.url}/calls", timeout=10).json()
    return body


@pytest.fixture
def stack(
    sqlite_url: str, thirdparty: ThirdParty, lab_redis: str, tmp_path: Path
) -> Iterator[Stack]:
    workdir = tmp_path / "stack"
    workdir.mkdir()
    server = RedisServer(workdir=workdir / "redis", log_file=workdir / "redis.log").start()
    stack = Stack(
        redis_server=server,
        database_url=sqlite_url,
        trace_store_url=f"sqlite:///{workdir / 'traces.db'}",
        thirdparty=thirdparty,
        session_redis_url=lab_redis,
        workdir=workdir,
    )
    state = SharedState(redis.Redis.from_url(server.url))
    state.set_world(World.from_json(FAST_WORLD))
    state.close()
    try:
        yield stack
    finally:
        stack.stop_all()
        server.stop()
