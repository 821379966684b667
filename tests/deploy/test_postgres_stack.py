"""The compose stack's processes, natively, on PostgreSQL: `docker compose up` without Docker.

A fresh database seeded by ``latency-lab seed``, a second one for the trace store (as
deploy/postgres/initdb creates), and the lab's own processes, each knowing the others only by URL
(as on separate hosts): the service under gunicorn with two workers, an RQ worker, the edge. They
share nothing but PostgreSQL and Redis. The test checks what a user of the stack would: the
article's statement counts through the front door, offloaded work delivered by the worker and
written back to PostgreSQL, and one trace store holding every process's spans, one request's
trace spanning the edge, the service and the worker, read back with the dashboard's reader.

Many writer processes hammering one PostgreSQL store while a reader watches is
tests/telemetry/test_store_concurrency.py (its ``postgresql`` parameter).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from latency_lab.lab.redis_server import free_port
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store import TraceStore
from tests.deploy.compose_file import load_compose
from tests.lab_fixtures import (
    NEW_LEAD,
    ThirdParty,
    eventually,
    process_env,
    start_gunicorn,
    start_process,
    stop_process,
    wait_until_up,
)

pytestmark = pytest.mark.postgres

LEADS = 60
PROVIDERS = (v.Provider.EMAIL, v.Provider.ANALYTICS, v.Provider.ENRICHMENT)


@dataclass
class Stack:
    edge: str
    service: str
    trace_store_url: str
    environment: dict[str, str]


def _worker_healthcheck(environment: dict[str, str]) -> bool:
    """docker-compose.yml's health check of a worker container, run here."""
    source = load_compose()["services"]["worker"]["healthcheck"]["test"][3]
    check = subprocess.run(
        [sys.executable, "-c", source], env=environment, timeout=30, capture_output=True
    )
    return check.returncode == 0


@pytest.fixture
def stack(
    empty_postgres: Callable[[str], str], lab_redis: str, thirdparty: ThirdParty, tmp_path: Path
) -> Iterator[Stack]:
    environment = process_env(
        LAB_DATABASE_URL=empty_postgres("lab"),
        LAB_TRACE_STORE_URL=empty_postgres("traces"),
        REDIS_URL=lab_redis,
        LAB_THIRDPARTY_URL=thirdparty.url,
        LAB_VAR_DIR=str(tmp_path),
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    seeded = subprocess.run(
        [
            str(Path(sys.executable).with_name("latency-lab")),
            "seed",
            "--leads",
            str(LEADS),
            "--no-progress",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr
    service_port, edge_port = free_port(), free_port()
    service_url, edge_url = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{edge_port}"
    edge_environment = environment | {"LAB_SERVICE_URL": service_url}
    logs = {name: tmp_path / f"{name}.log" for name in ("service", "worker", "edge")}
    processes = {
        "service": start_gunicorn(
            "latency_lab.service.app:create_app()",
            port=service_port,
            env=environment,
            log_file=logs["service"],
            threads=4,
            workers=2,
        ),
        "worker": start_process(
            [sys.executable, "-m", "latency_lab.worker.process"],
            env=environment,
            log_file=logs["worker"],
        ),
        "edge": start_gunicorn(
            "latency_lab.edge.app:create_edge_app()",
            port=edge_port,
            env=edge_environment,
            log_file=logs["edge"],
        ),
    }
    try:
        wait_until_up(f"{service_url}/healthz", processes["service"], logs["service"])
        wait_until_up(f"{edge_url}/edge/healthz", processes["edge"], logs["edge"])
        assert eventually(lambda: _worker_healthcheck(environment), timeout_s=20), logs[
            "worker"
        ].read_text()
        yield Stack(edge_url, service_url, environment["LAB_TRACE_STORE_URL"], environment)
    finally:
        with ThreadPoolExecutor() as stopping:  # each takes a graceful second or two
            list(stopping.map(stop_process, processes.values()))


def _statements(response: httpx.Response) -> str:
    timing = response.headers["Server-Timing"]
    return timing.split('desc="', 1)[1].split('"', 1)[0]


def test_the_stack_on_postgresql(stack: Stack, thirdparty: ThirdParty) -> None:
    front = httpx.Client(base_url=stack.edge, timeout=15, trust_env=False)

    lazy = front.get("/api/leads?limit=5", headers={"X-Lab-Toggles": "eager_loading=off"})
    eager = front.get("/api/leads?limit=5", headers={"X-Lab-Toggles": "eager_loading=on"})
    thirdparty.reset()  # the reads tracked analytics inline
    created = front.post("/api/leads", json=NEW_LEAD, headers={"X-Lab-Toggles": "async_offload=on"})

    # The article's N+1 and its fix, through the front door, on PostgreSQL.
    assert (lazy.status_code, eager.status_code) == (200, 200)
    assert lazy.json() == eager.json() and lazy.json()["total"] == LEADS
    assert (_statements(lazy), _statements(eager)) == ("16 statements", "1 statements")
    # Offloaded: the request made no call; the worker delivered each one and wrote back.
    assert created.status_code == 201, created.text
    assert 'desc="0 calls"' in created.headers["Server-Timing"]
    assert created.json()["id"] == LEADS + 1
    delivered = eventually(
        lambda: all(thirdparty.delivered(p) == 1 for p in PROVIDERS), timeout_s=20
    )
    assert delivered, thirdparty.calls()["counts"]
    lead = f"/api/leads/{created.json()['id']}"
    assert eventually(lambda: front.get(lead).json()["industry"] is not None)

    # One store, every process: the request's trace holds the edge's, the service's and the
    # worker's spans, as the dashboard reads them.
    store = TraceStore(stack.trace_store_url)
    trace_id = created.headers["traceresponse"].split("-")[1]

    def whole_trace() -> set[str]:
        names = {str(span["name"]) for span in store.trace_spans(trace_id)}
        return names if {v.SPAN_EDGE, v.SPAN_JOB} <= names else set()

    try:
        assert eventually(whole_trace, timeout_s=15), store.trace_spans(trace_id)
        roles = {row["role"] for row in store.recent_requests(limit=100)}
        assert {"edge", "service"} <= roles
        writers = {row["service"] for row in store.process_stats()}
        assert {"latency-lab-edge", "latency-lab-service", "latency-lab-worker"} <= writers
    finally:
        store.close()
