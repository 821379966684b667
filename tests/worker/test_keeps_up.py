"""The queue keeps up: a burst like the bench's (600 reads' analytics events arriving at ~100/s,
the provider at its default ~100 ms) is done shortly after the last one arrives, with the
default settings: one worker process (``LAB_RQ_WORKERS``) running ``LAB_RQ_CONCURRENCY`` jobs at
once. A count test, with a loose bound, not a timing benchmark."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from opentelemetry import trace
from rq import Queue, Worker

from latency_lab.benchmarks.queue_drain import drain_after
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import World
from latency_lab.service import tasks
from latency_lab.service.offload import QUEUE_NAME, enqueue
from latency_lab.worker.queue_flow import read_flow
from tests.lab_fixtures import ThirdParty, eventually, process_env, start_process, stop_process

JOBS = 600
ARRIVALS_PER_S = 100.0
DRAINED_WITHIN_S = 3.0


@pytest.fixture
def default_world(lab_redis: str, thirdparty: ThirdParty) -> str:
    """The providers at their defaults (analytics ~100 ms), not the tests' fast world."""
    state = SharedState(redis.Redis.from_url(lab_redis))
    state.set_world(World())
    state.close()
    time.sleep(0.5)  # the simulator's poller sees it
    return thirdparty.url


@pytest.fixture
def workers(
    default_world: str, lab_redis: str, sqlite_url: str, tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The worker processes ``latency-lab up`` starts with the default settings."""
    env = process_env(
        LAB_DATABASE_URL=sqlite_url,
        REDIS_URL=lab_redis,
        LAB_THIRDPARTY_URL=default_world,
        LAB_VAR_DIR=str(tmp_path),
        LAB_TRACE_STORE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
    )
    defaults = Settings()
    processes = [
        start_process([sys.executable, "-m", "latency_lab.worker.process"], env=env,
                      log_file=tmp_path / f"worker-{n}.log")
        for n in range(defaults.rq_workers)
    ]  # fmt: skip
    slots = defaults.rq_workers * defaults.rq_concurrency
    with redis.Redis.from_url(lab_redis) as client:
        ready = eventually(lambda: Worker.count(connection=client) == slots, timeout_s=30)
    assert ready, (tmp_path / "worker-0.log").read_text()
    yield processes
    for process in processes:
        stop_process(process)


def test_a_burst_of_reads_jobs_is_done_shortly_after_the_last_arrives(
    workers: list[subprocess.Popen[bytes]], lab_redis: str
) -> None:
    client = redis.Redis.from_url(lab_redis)
    queue = Queue(QUEUE_NAME, connection=client)
    tracer = trace.get_tracer("test")
    started = time.time()
    for n in range(JOBS):  # as the service enqueues a read's analytics event
        enqueue(tasks.track_event, {"name": "leads.list", "event_id": f"read-{n}"},
                queue=queue, tracer=tracer)  # fmt: skip
        time.sleep(max(0.0, started + (n + 1) / ARRIVALS_PER_S - time.time()))
    last_arrival = time.time()

    drain = drain_after(lab_redis, started, last_arrival, timeout_s=DRAINED_WITHIN_S)

    assert queue.count == 0 and queue.started_job_registry.count == 0, read_flow(client)
    assert queue.finished_job_registry.count == JOBS
    assert queue.failed_job_registry.count == 0
    assert drain.drain_s is not None and drain.drain_s <= DRAINED_WITHIN_S
    assert drain.arrivals == JOBS  # the measurement ties back to the jobs
    assert drain.completions + drain.drained_jobs == JOBS
    print(
        f"\n{drain.arrival_rate:.0f} jobs/s arrived, {drain.completion_rate:.0f}/s completed; "
        f"{drain.backlog_at_end} left at the last arrival, drained in {drain.drain_s:.2f} s"
    )
