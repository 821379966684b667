"""SIGTERM stops a worker process cleanly: the jobs its threads run finish and are recorded, an
idle one leaves at once (its blocked dequeues are unblocked, nothing is taken from the queue),
and it leaves no RQ worker registered behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from opentelemetry import trace
from rq import Queue, Worker

from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import World
from latency_lab.service import tasks
from latency_lab.service.offload import QUEUE_NAME, enqueue
from tests.lab_fixtures import ThirdParty, eventually, process_env, start_process, stop_process

SLOTS = 16  # the default LAB_RQ_CONCURRENCY


@pytest.fixture
def worker(
    lab_redis: str, thirdparty: ThirdParty, sqlite_url: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = process_env(
        LAB_DATABASE_URL=sqlite_url,
        REDIS_URL=lab_redis,
        LAB_THIRDPARTY_URL=thirdparty.url,
        LAB_VAR_DIR=str(tmp_path),
        LAB_TRACE_STORE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
        LAB_RQ_CONCURRENCY=str(SLOTS),
    )
    process = start_process([sys.executable, "-m", "latency_lab.worker.process"], env=env,
                            log_file=tmp_path / "worker.log")  # fmt: skip
    with redis.Redis.from_url(lab_redis) as client:
        ready = eventually(lambda: Worker.count(connection=client) == SLOTS, timeout_s=30)
    assert ready, (tmp_path / "worker.log").read_text()
    yield process
    stop_process(process)


def test_an_idle_worker_leaves_at_once_and_unregistered(
    worker: subprocess.Popen[bytes], lab_redis: str
) -> None:
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(lab_redis))
    for n in range(100):  # some work first: every slot has dequeued on some pooled connection
        enqueue(tasks.track_event, {"name": "warm", "event_id": f"warm-{n}"}, queue=queue,
                tracer=trace.get_tracer("test"))  # fmt: skip
    assert eventually(lambda: queue.finished_job_registry.count == 100, timeout_s=20)
    time.sleep(1.0)  # every slot is in its blocking dequeue (5 s each)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - sent < 3.0  # not the dequeue's 5 s
    with redis.Redis.from_url(lab_redis) as client:
        assert Worker.count(connection=client) == 0


def test_running_jobs_finish_before_the_worker_leaves(
    worker: subprocess.Popen[bytes], lab_redis: str
) -> None:
    client = redis.Redis.from_url(lab_redis)
    state = SharedState(client)
    state.set_world(World.from_json({"analytics": {"latency_ms": 1500.0, "jitter_ms": 0.0}}))
    time.sleep(0.5)  # the simulator sees the slow provider
    queue = Queue(QUEUE_NAME, connection=client)
    for n in range(SLOTS + 2):  # one job per slot running, two waiting
        enqueue(tasks.track_event, {"name": "stop", "event_id": f"stop-{n}"}, queue=queue,
                tracer=trace.get_tracer("test"))  # fmt: skip
    assert eventually(lambda: queue.started_job_registry.count == SLOTS, timeout_s=10)

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=15) == 0
    assert queue.finished_job_registry.count == SLOTS  # the running ones, done and recorded
    assert queue.count == 2  # the waiting ones left for the next worker, not taken
    assert queue.started_job_registry.count == 0 and queue.failed_job_registry.count == 0
    assert Worker.count(connection=client) == 0
